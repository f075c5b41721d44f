"""backup and restore: a data directory's state taken online, rebuilt on a fresh machine (otpki/backup.py)."""

from pathlib import Path
from typing import Annotated

import typer

from otpki.cli.common import JsonFlag, console, handle_errors, line, print_json, settings, state, styled


@handle_errors
def backup(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="A new (or empty) directory for the backup")],
    json_out: JsonFlag = False,
) -> None:
    """Take a consistent snapshot of the store, the encrypted CA key files and otpki.toml into DEST while every
    instance keeps serving. The CA key passphrase, the HSM PIN and other secret files are not in it: keep them
    apart."""
    from otpki.backup import backup as take_backup

    s = settings()
    manifest = take_backup(s, dest, actor=s.actor())
    if json_out:
        print_json(manifest.model_dump(mode="json"))
        return
    rows = sum(t.rows for t in manifest.tables)
    keys = sum(1 for f in manifest.files if f.path.startswith("keys/"))
    console.print(line(f"backed up {rows} rows of {manifest.source} (audit chain of {manifest.audit_records} "
                       f"records intact), {keys} encrypted key file(s) and the configuration to {dest}: ",
                       styled("verified", "green")), soft_wrap=True)
    for ref in manifest.hsm_keys:
        console.print(f"key in the HSM, not in the backup: {ref}")
    for name in manifest.kept_apart:
        console.print(line(f"a secret in clear, not in the backup: {name} of the data directory (it seals the console "
                           "users' TOTP secrets): keep a copy apart, with the passphrase"), soft_wrap=True)


@handle_errors
def restore(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="A backup directory made by `otpki backup`")],
    store: Annotated[str | None, typer.Option(
        "--store", metavar="URL", help="Restore the store into this empty database instead of the one the "
                                       "restored configuration (or OTPKI_STORE_URL) names")] = None,
    crl_number_gap: Annotated[int, typer.Option(
        help="Each CA's next CRL is numbered this far above the last one in the backup: CRLs published after "
             "the backup must never see their number again")] = 1_000_000,
    trust_version_gap: Annotated[int, typer.Option(
        help="Each group's trust list is renumbered this far above the highest version in the backup: a PLC or "
             "broker handed a version after the backup must be offered a higher one")] = 1_000_000,
    json_out: JsonFlag = False,
) -> None:
    """Rebuild the data directory (--data-dir / OTPKI_DATA_DIR; new or empty) from a backup, every file checked
    against its manifest. CRL numbers and trust-list versions go on far above the backup's, so nothing handed out
    after the backup is ever offered again under its number. Then run `otpki certs reconcile` on certificates
    and CRLs collected from the plant: those issued after the backup are not in the restored inventory."""
    from otpki.backup import restore as restore_backup
    from otpki.config_paths import absolute

    s = settings(must_exist=False)
    result = restore_backup(src, state.data_dir or absolute(s.data_dir), actor=s.actor(), store_url=store,
                            crl_number_gap=crl_number_gap, trust_version_gap=trust_version_gap)
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    rows = sum(t.rows for t in result.copy_.tables)
    console.print(line(f"restored {rows} rows into {result.store} and {result.files - 1} file(s) into "
                       f"{result.data_dir}: ", styled("verified", "green"),
                       f" (audit chain of {result.copy_.audit_records} records intact; next CRL numbers start "
                       f"{crl_number_gap} above the backup's, trust-list versions {trust_version_gap} above)"),
                  soft_wrap=True)
    for name in result.to_copy:
        console.print(line(f"copy {name} from the old data directory into {result.data_dir} before serving the "
                           "console: the users' TOTP secrets are sealed with it (without it, give each user a new "
                           "one: otpki users reset-totp NAME)"), soft_wrap=True)
