"""`otpki init` is all or nothing: a PostgreSQL store it cannot reach or log in to, a store that already holds a
plant, a step that fails half-way: one line, exit 2, and nothing left behind (no otpki.toml, no key file, no half
data directory, no CA in the store). Real processes, a real PostgreSQL cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.otpki.cli_at_once import ROOT, at_once, otpki_env
from trustlists.errors import KeyAccessError
from trustlists.hierarchy import Hierarchy
from trustlists.testing import PostgresCluster, free_port, make_engine


def otpki(data_dir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=otpki_env(data_dir, env),
                          capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)


def refused(res: subprocess.CompletedProcess[str], words: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and words in res.stderr, res.stderr


def ca_count(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM cas").fetchone()[0])  # type: ignore[index]


def test_init_on_a_database_it_cannot_reach_or_log_in_to_leaves_nothing(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    unreachable = f"postgresql://otpki@127.0.0.1:{free_port()}/otpki"  # nothing listens there
    new_dir = tmp_path / "new" / "pki"
    refused(otpki(new_dir, "init", env={"OTPKI_STORE_URL": unreachable}), "cannot connect to the database")
    assert not (tmp_path / "new").exists()

    no_such_role = postgres_cluster.database().replace("postgresql://postgres@", "postgresql://nobody:secret@")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    res = otpki(empty_dir, "init", env={"OTPKI_STORE_URL": no_such_role})
    refused(res, "nobody")
    assert "secret" not in res.stderr  # the password never in a message
    assert list(empty_dir.iterdir()) == []  # the directory the operator made stays, empty


def test_init_on_a_database_that_holds_a_plant_is_refused_and_changes_nothing(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    env = {"OTPKI_STORE_URL": url}
    assert otpki(tmp_path / "first", "init", env=env).returncode == 0
    cas = ca_count(url)
    second = tmp_path / "second"
    refused(otpki(second, "init", env=env), "already holds a plant")
    assert not second.exists()
    assert ca_count(url) == cas  # no second root, no second CA per group


def test_a_plant_whose_creation_fails_half_way_leaves_no_ca_in_the_store(
        postgres_cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_cluster.database()
    engine = make_engine(tmp_path, store_url=url)
    try:
        made: list[str] = []
        create_issuing_ca = Hierarchy.create_issuing_ca

        def fail_on_the_second(self: Hierarchy, group: str, site: str | None, *, actor: str) -> object:
            if made:
                raise KeyAccessError("the key store went away")  # the root and one issuing CA were made
            made.append(group)
            return create_issuing_ca(self, group, site, actor=actor)

        monkeypatch.setattr(Hierarchy, "create_issuing_ca", fail_on_the_second)
        with pytest.raises(KeyAccessError):
            engine.hierarchy.create_plant(actor="tester")
        assert made and ca_count(url) == 0
        monkeypatch.undo()
        created = engine.hierarchy.create_plant(actor="tester")  # and it can simply be run again
        assert len(created) == ca_count(url) > 2
        assert engine.verify_audit().ok
    finally:
        engine.close()


def one_winner(results: list[tuple[int, str]], words: tuple[str, ...]) -> None:
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.count("\n") == 1 and any(w in loser for w in words), loser


def test_two_inits_of_one_data_directory_at_once_leave_the_winner_whole(tmp_path: Path) -> None:
    data_dir = tmp_path / "pki"
    results = at_once((otpki_env(data_dir), ["init"]), (otpki_env(data_dir), ["init"]))
    one_winner(results, ("being filled by another otpki process", "already initialised"))
    # The loser neither wrote into the winner's directory nor cleaned it away.
    verified = otpki(data_dir, "audit", "verify", env={})
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
    listed = otpki(data_dir, "ca", "list", "--json", env={})
    assert listed.returncode == 0, listed.stderr
    import json

    cas = json.loads(listed.stdout)
    assert sum(1 for ca in cas if ca["parent_id"] is None) == 1
    keys = {p.name.removesuffix(".key.pem") for p in (data_dir / "keys").glob("*.key.pem")}
    assert keys == {ca["key_ref"] for ca in cas}  # a key file for every CA, and none of the loser's
    assert not (data_dir / ".otpki-busy").exists()


def test_two_instances_initialising_one_database_at_once_make_one_plant(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    env = {"OTPKI_STORE_URL": url}
    first, second = tmp_path / "host-a", tmp_path / "host-b"
    results = at_once((otpki_env(first, env), ["init"]), (otpki_env(second, env), ["init"]))
    one_winner(results, ("already holds a plant", "creating a plant"))
    loser = second if results[1][0] == 2 else first
    assert not loser.exists()
    import psycopg

    with psycopg.connect(url) as conn:
        roots = conn.execute("SELECT COUNT(*) FROM cas WHERE parent_id IS NULL").fetchone()
    assert roots is not None and roots[0] == 1


def test_a_directory_another_process_is_filling_is_left_alone(tmp_path: Path) -> None:
    """What the concurrent tests above can only hit by chance, made certain: another process holds the directory
    (its claim file is there, and some of its work)."""
    data_dir = tmp_path / "pki"
    data_dir.mkdir()
    (data_dir / ".otpki-busy").write_bytes(b"")
    (data_dir / "otpki.toml").write_text("# being written by the other process\n")
    refused(otpki(data_dir, "init", env={}), "being filled by another otpki process")
    assert sorted(p.name for p in data_dir.iterdir()) == [".otpki-busy", "otpki.toml"]
    assert (data_dir / "otpki.toml").read_text() == "# being written by the other process\n"
