"""users: console and REST API users (add, list, remove, reset-totp) and GDS password hashes; tokens: API tokens."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from otpki.cli.common import JsonFlag, console, engine, handle_errors, line, print_columns, print_json, styled

if TYPE_CHECKING:
    from trustlists.accounts import NewCredentials

users_app = typer.Typer(help="Console and REST API users (kept in the store); `hash-password` for GDS users (the "
                             "gds.access table of otpki.toml).", no_args_is_help=True)
tokens_app = typer.Typer(help="REST API tokens (shown once, kept hashed).", no_args_is_help=True)

RoleOption = Annotated[str, typer.Option("--role", help="viewer, operator or ca-admin")]


def _read_password(confirm: bool) -> str:
    """A prompt on a terminal (twice, to catch a typo), else one line of stdin: never the command line."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ValueError("the two passwords differ")
    return password


def _show_credentials(creds: "NewCredentials", json_out: bool) -> None:
    if json_out:
        print_json({"user": creds.user.name, "role": creds.user.role.value, "totp_secret": creds.totp_secret,
                    "provisioning_uri": creds.provisioning_uri})
        return
    import segno

    console.print(line("Add this to the user's authenticator app (shown once): ",
                       styled(creds.provisioning_uri, "bold")), highlight=False, soft_wrap=True)
    sys.stdout.flush()
    segno.make(creds.provisioning_uri, error="m").terminal(out=sys.stdout, compact=True)
    console.print(f"TOTP secret: {creds.totp_secret}", highlight=False)


@users_app.command("add")
@handle_errors
def add(name: Annotated[str, typer.Argument(help="User name")], role: RoleOption,
        json_out: JsonFlag = False) -> None:
    """Add a user; the password is read from a prompt (or stdin). Prints the TOTP provisioning URI and a QR code."""
    password = _read_password(confirm=True)
    with engine() as (eng, s):
        creds = eng.accounts.add_user(name, role, password, actor=s.actor())
    _show_credentials(creds, json_out)


@users_app.command("list")
@handle_errors
def list_users(json_out: JsonFlag = False) -> None:
    """Every console user and their role."""
    with engine() as (eng, _):
        users = eng.accounts.list_users()
    if json_out:
        print_json([u.model_dump(mode="json") for u in users])
        return
    print_columns(["NAME", "ROLE", "CREATED"], [[u.name, u.role.value, u.created_at.isoformat()] for u in users])


@users_app.command("remove")
@handle_errors
def remove(name: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Remove a user; their sessions end at once."""
    with engine() as (eng, s):
        eng.accounts.remove_user(name, actor=s.actor())
    console.print(f"removed {name}", highlight=False)


@users_app.command("reset-totp")
@handle_errors
def reset_totp(name: Annotated[str, typer.Argument(help="User name")], json_out: JsonFlag = False) -> None:
    """Give a user a new TOTP secret (a lost phone); their sessions end."""
    with engine() as (eng, s):
        creds = eng.accounts.reset_totp(name, actor=s.actor())
    _show_credentials(creds, json_out)


@users_app.command("hash-password")
def hash_password_cmd() -> None:
    """Read a password (prompt, or stdin when piped) and print the hash for a gds.access.users entry."""
    from opcua_gds.access import hash_password

    password = _read_password(confirm=False)
    if not password:
        raise typer.Exit(2)
    typer.echo(hash_password(password))


@tokens_app.command("create")
@handle_errors
def create_token(name: Annotated[str, typer.Argument(help="Token name (what the audit log calls it)")],
                 role: RoleOption,
                 user: Annotated[str | None, typer.Option(
                     help="The user whose TOTP code the token's CA-admin actions carry (required for ca-admin)")
                 ] = None,
                 json_out: JsonFlag = False) -> None:
    """Create an API token and print it once (only its SHA-256 is kept)."""
    with engine() as (eng, s):
        raw, token = eng.accounts.create_token(name, role, user=user, actor=s.actor())
    if json_out:
        print_json({"name": token.name, "role": token.role.value, "token": raw})
        return
    console.print(line("API token (shown once; send it as `Authorization: Bearer ...`): ", styled(raw, "bold")),
                  highlight=False, soft_wrap=True)


@tokens_app.command("list")
@handle_errors
def list_tokens(json_out: JsonFlag = False) -> None:
    """Every API token (never the token itself)."""
    with engine() as (eng, _):
        tokens = eng.accounts.list_tokens()
    if json_out:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    print_columns(["NAME", "ROLE", "USER", "CREATED", "STATE"],
                  [[t.name, t.role.value, t.user_name or "-", t.created_at.isoformat(),
                    "revoked" if t.revoked else "live"] for t in tokens])


@tokens_app.command("revoke")
@handle_errors
def revoke_token(name: Annotated[str, typer.Argument(help="Token name")]) -> None:
    """Revoke an API token: refused from its next request on."""
    with engine() as (eng, s):
        eng.accounts.revoke_token(name, actor=s.actor())
    console.print(f"revoked {name}", highlight=False)
