"""The demo's data directory: created fresh, wiped only when it carries the demo marker, left for inspection."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from pathlib import Path

from otpki.config import EnvSettings, Settings, build_settings, read_file_settings
from otpki.demo.report import ConsoleHint
from trustlists.safe_files import write_secret

MARKER = ".otpki-demo"
PASSPHRASE_FILE = "demo-passphrase"


class NotADemoDirectory(ValueError):
    reason = "not_a_demo_directory"


def prepare_dir(data_dir: Path) -> None:
    """An empty data_dir with the marker; a non-empty directory without the marker is never touched."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise NotADemoDirectory(f"{data_dir} exists, is not empty and was not made by `otpki demo`; "
                                    "choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / MARKER).write_text("created by otpki demo; safe to delete\n")


def check_demo_store(url: str) -> None:
    """The demo writes a whole plant into the store: refuse one that holds anything (the demo wipes only what it
    made itself, and a database is never its own)."""
    from trustlists.store import describe_url, open_store
    from trustlists.store_copy import is_empty

    store = open_store(url)
    try:
        if not is_empty(store):
            raise NotADemoDirectory(f"the store {describe_url(url)} is not empty: give `otpki demo --store` a new, "
                                    "empty database")
    finally:
        store.close()


def demo_settings(data_dir: Path, sites: list[str], store_url: str | None = None) -> Settings:
    """Embedded defaults (SQLite unless `store_url`, encrypted file keys); the passphrase from
    OTPKI_CA_PASSPHRASE(_FILE) or a new file. The store URL goes into otpki.toml, so that the commands run on the
    data directory afterwards (`otpki -d DIR certs list`) find the plant."""
    env = EnvSettings()
    if not (env.ca_passphrase or env.ca_passphrase_file):
        secret = data_dir / PASSPHRASE_FILE
        write_secret(secret, secrets.token_urlsafe(24).encode())
        env = env.model_copy(update={"ca_passphrase_file": secret})
    quoted = ", ".join(f'"{s}"' for s in sites)
    # A JSON string is a TOML basic string: quotes and backslashes in a password stay as they are.
    store = f"\n[store]\nurl = {json.dumps(store_url)}\n" if store_url else ""
    (data_dir / "otpki.toml").write_text(f"# written by otpki demo\n[pki]\nsites = [{quoted}]\n{store}")
    return build_settings(read_file_settings(data_dir / "otpki.toml"), data_dir, env)


CONSOLE_LISTEN = "127.0.0.1:8443"  # [web] listen's default, said explicitly in the command shown


def console_hint(data_dir: Path, settings: Settings) -> ConsoleHint:
    """The commands that open the demo's plant in the console: a user to log in with, then `otpki serve`."""
    import shlex

    passphrase = settings.env.ca_passphrase_file
    # The demo's own passphrase file, or the one the user's environment named: the command says which file.
    prefix = f"OTPKI_CA_PASSPHRASE_FILE={shlex.quote(str(passphrase))} " if passphrase is not None else ""
    base = f"otpki -d {shlex.quote(str(data_dir))}"
    return ConsoleHint(add_user=f"{base} users add admin --role ca-admin",
                       command=f"{prefix}{base} serve --listen {CONSOLE_LISTEN}", url=f"https://{CONSOLE_LISTEN}/",
                       root_ca=str(data_dir / "web" / "root-ca.pem"))


def log_to_file(data_dir: Path) -> logging.Handler:
    """Library warnings (asyncua, amqtt, gmqtt) go to demo.log, not through the live display."""
    handler = logging.FileHandler(data_dir / "demo.log")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def site_names(n: int) -> list[str]:
    known = ["north", "south", "east", "west"]
    return known[:n] if n <= len(known) else known + [f"site-{i + 1}" for i in range(len(known), n)]
