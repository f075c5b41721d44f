"""db: the store's schema version and its upgrade."""

from typing import TYPE_CHECKING

import typer

from otpki.cli.common import EXIT_PROBLEM, JsonFlag, console, handle_errors, line, print_json, settings, styled

if TYPE_CHECKING:  # for annotations only: nothing more imported when the CLI starts
    from trustlists.schema import SchemaStatus

db_app = typer.Typer(help="The store's schema: its version, and upgrading it to this otpki's.", no_args_is_help=True)


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
