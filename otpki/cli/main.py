"""`otpki`: certificate management for operational technology."""

from pathlib import Path
from typing import Annotated

import typer

from otpki.cli import admin, backup, certs, db, demo, doctor, gds, mqtt, push, requests, serve, trust
from otpki.cli.common import state

app = typer.Typer(
    name="otpki",
    help="Certificate management for OT: an offline CA hierarchy, trust lists, OPC UA and MQTT identities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help and usage errors: typer's rich panels import rich's console, markdown and traceback
    # modules, which alone take longer than the rest of `otpki --help` (bench/cli_startup.py).
    rich_markup_mode=None,
)


@app.callback()
def main(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", "-d", envvar="OTPKI_DATA_DIR",
        help="Data directory (database, encrypted CA keys, otpki.toml). Default: ./otpki-data")] = None,
) -> None:
    from otpki.config_paths import absolute

    # Absolute from here on: worker processes and generated broker configs must not depend on a cwd.
    state.data_dir = absolute(data_dir) if data_dir is not None else None


app.command("init")(admin.init)
app.command("demo")(demo.demo)
app.add_typer(admin.ca_app, name="ca")
app.add_typer(admin.owners_app, name="owners")
app.add_typer(certs.certs_app, name="certs")
app.add_typer(trust.trustlist_app, name="trustlist")
app.add_typer(admin.crl_app, name="crl")
app.add_typer(admin.audit_app, name="audit")
app.add_typer(certs.batch_app, name="batch")
app.add_typer(gds.gds_app, name="gds")
app.add_typer(gds.users_app, name="users")
app.add_typer(requests.requests_app, name="requests")
app.add_typer(push.targets_app, name="targets")
app.command("push")(push.push)
app.add_typer(mqtt.mqtt_app, name="mqtt")
app.command("doctor")(doctor.doctor)
app.command("serve")(serve.serve)
app.add_typer(db.db_app, name="db")
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
config_app = typer.Typer(help="The otpki.toml reference.", no_args_is_help=True)


@config_app.command("reference")
def config_reference() -> None:
    """Print every otpki.toml key and OTPKI_* variable with its type and default (Markdown)."""
    from otpki.config_reference import reference_markdown

    print(reference_markdown())


app.add_typer(config_app, name="config")


if __name__ == "__main__":
    app()
