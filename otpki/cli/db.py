"""db: the store's schema version and its upgrade."""

from typing import TYPE_CHECKING, Annotated

import typer

from otpki.cli.common import EXIT_PROBLEM, JsonFlag, console, handle_errors, line, print_json, settings, styled

if TYPE_CHECKING:  # for annotations only: nothing more imported when the CLI starts
    from trustlists.schema import SchemaStatus
    from trustlists.store_copy import StoreCopy

db_app = typer.Typer(help="The store: its schema version, upgrading it, copying it into another database.",
                      no_args_is_help=True)


def _describe(st: "SchemaStatus") -> str:
    return f"schema version {st.version} of {st.latest} ({st.backend})"


@db_app.command("status")
@handle_errors
def db_status(json_out: JsonFlag = False) -> None:
    """Show the store's schema version and the migrations it still needs: exit 1 unless it is the one this otpki
    works with (older: run `otpki db upgrade`; newer: run a newer otpki)."""
    from otpki.runtime import open_store
    from trustlists import schema

    store = open_store(settings(), check_schema=False)
    try:
        st = schema.status(store)
    finally:
        store.close()
    if json_out:
        print_json({**st.model_dump(), "current": st.current})
    elif st.current:
        console.print(line(_describe(st), ": ", styled("current", "green")))
    elif st.version > st.latest:
        console.print(line(_describe(st), ": ", styled("newer than this otpki", "bold red"),
                           "; run a newer otpki on it"), soft_wrap=True)
    else:
        console.print(line(_describe(st), ": ", styled(f"{len(st.pending)} migration(s) pending", "yellow"),
                           f" ({', '.join(st.pending)}); run `otpki db upgrade`"), soft_wrap=True)
    if not st.current:
        raise typer.Exit(EXIT_PROBLEM)


@db_app.command("upgrade")
@handle_errors
def db_upgrade(json_out: JsonFlag = False) -> None:
    """Apply the migrations the store still needs, each in its own transaction, audited. Stop the instances of
    the older otpki on the store and back it up first."""
    from otpki.runtime import open_store
    from trustlists import schema

    s = settings()
    store = open_store(s, check_schema=False)
    try:
        result = schema.upgrade(store, actor=s.actor())
    finally:
        store.close()
    if json_out:
        print_json(result.model_dump())
    elif result.applied:
        for name in result.applied:
            console.print(f"applied {name}")
        console.print(line(_describe(result.after), ": ", styled("current", "green")))
    else:
        console.print(line(_describe(result.after), ": ", styled("current", "green"), " (nothing to do)"))


@db_app.command("copy")
@handle_errors
def db_copy(
    to: Annotated[str, typer.Option("--to", metavar="URL", help="The empty store to copy into: "
                                    "postgresql://user[:password]@host[:port]/database (or sqlite:///path).")],
    json_out: JsonFlag = False,
) -> None:
    """Copy every row of this store (certificates, requests, targets, the audit log, CRLs, trust-list versions...)
    into an empty store, check the copy (row counts and digests per table, the audit chain) and audit it there.
    The source is read as of one moment and left as it was; then point [store] url or OTPKI_STORE_URL at the
    target."""
    from otpki.runtime import open_store
    from trustlists.store import describe_url
    from trustlists.store import open_store as open_store_url
    from trustlists.store_copy import copy_store

    s = settings()
    source_url = s.store_url
    if to == source_url:
        raise _fail_same()
    source = open_store(s)
    try:
        target = open_store_url(to, busy_timeout_s=s.file.store.busy_timeout_s)
        try:
            result = copy_store(source, target, source_name=describe_url(source_url), target_name=describe_url(to),
                                actor=s.actor())
        finally:
            target.close()
    finally:
        source.close()
    if json_out:
        print_json(result.model_dump())
    else:
        _print_copy(result)


def _fail_same() -> Exception:
    from trustlists.errors import InvalidInput

    return InvalidInput("--to names the store this otpki uses already: give the URL of a new, empty database")


def _print_copy(result: "StoreCopy") -> None:
    for t in result.tables:
        console.print(f"{t.table}: {t.rows} rows")
    console.print(line(f"copied {sum(t.rows for t in result.tables)} rows from {result.source} to {result.target}: ",
                       styled("verified", "green"), f" (audit chain of {result.audit_records} records intact; "
                       f"the copy is audit record {result.audit_seq})"), soft_wrap=True)
