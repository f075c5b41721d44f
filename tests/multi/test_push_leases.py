"""Two push schedulers (`otpki push --all --every`) on one PostgreSQL store: never two pushes to one PLC at a
time, and a killed scheduler's targets taken over (audited) once their lease expired. Real processes, a real
PostgreSQL cluster, real sockets at the PLCs' addresses (silent: each push holds its connection open until the
push client's 10 s connect timeout, long enough to see two at once and to kill a scheduler mid-push)."""

from __future__ import annotations

import json
from pathlib import Path

from trustlists.leases import push_target_lease
from trustlists.testing import PostgresCluster, make_engine

from .instances import SilentPlc, instances, otpki, pid_of, second_instance, wait_for

PLCS = 3
LEASE_S = 3


def test_two_schedulers_never_push_one_plc_at_once_and_take_over_a_killed_ones_targets(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text(f'[push]\ntimeout_s = 60\nlease_s = {LEASE_S}\n'
                   '[push.credentials.plc]\nusername = "plc-admin"\npassword_env = "OTPKI_TEST_PLC_PASSWORD"\n')
    a_dir = tmp_path / "a"
    otpki(a_dir, url, "init", "--config", str(cfg))
    plcs = [SilentPlc() for _ in range(PLCS)]
    try:
        for n, plc in enumerate(plcs):
            otpki(a_dir, url, "targets", "add", f"press-{n}", plc.endpoint, "--credentials", "plc")
        targets = {t["address"]: t["id"] for t in json.loads(otpki(a_dir, url, "targets", "list", "--json").stdout)}
        b_dir = second_instance(a_dir, tmp_path / "b")
        observer = make_engine(tmp_path / "observer", store_url=url)
        with instances(tmp_path) as group:
            procs = [group.start(d, url, "push", "--all", "--every", "1", OTPKI_TEST_PLC_PASSWORD="pw")
                     for d in (a_dir, b_dir)]

            def alive() -> None:
                for p in procs:
                    assert p.poll() is None, group.log(p)

            # Wait until a scheduler holds a target's lease while its push holds the PLC's connection open.
            def mid_push() -> tuple[str, list[str]] | None:
                held = observer.leases.held("push-target:")
                for plc in plcs:
                    holder = held.get(push_target_lease(targets[plc.endpoint]))
                    if holder is not None and plc.open:
                        return holder, [t for name, h in held.items() if h == holder
                                        for t in [name.removeprefix("push-target:")]]
                return None

            killed_id, its_targets = wait_for("a push in progress under a lease", mid_push, deadline_s=60,
                                              alive=alive)
            victim = next(p for p in procs if p.pid == pid_of(killed_id))
            survivor = next(p for p in procs if p is not victim)
            group.kill9(victim)
            # Connections each PLC saw up to the kill: the victim may have held a lease without having connected
            # yet (a loaded machine), so "a push by the survivor" is one more connection than this, not a total.
            seen_at_kill = {plc.endpoint: len(plc.accepted) for plc in plcs}

            def taken_over() -> bool:
                records = observer.audit_records(action="lease.takeover")
                taken = {r.subject.removeprefix("push-target:") for r in records
                         if r.details["previous_holder"] == killed_id}
                return taken >= set(its_targets)

            # The lease outlives its holder by at most LEASE_S of the store's clock; the survivor's next round
            # (every second) takes the targets over.
            wait_for("the survivor takes over the killed scheduler's targets", taken_over, deadline_s=LEASE_S + 30,
                     alive=lambda: None if survivor.poll() is None else alive())
            takeovers = [r for r in observer.audit_records(action="lease.takeover")
                         if r.details["previous_holder"] == killed_id]
            assert {pid_of(r.details["holder"]) for r in takeovers} == {survivor.pid}
            # ... and pushes them: the PLC sees a connection again after the kill.
            by_id = {v: k for k, v in targets.items()}
            for target_id in its_targets:
                plc = next(p for p in plcs if p.endpoint == by_id[target_id])
                wait_for(f"a push to {plc.endpoint} by the survivor",
                         lambda plc=plc: len(plc.accepted) > seen_at_kill[plc.endpoint], deadline_s=30)
        assert [plc.max_open for plc in plcs] == [1] * PLCS  # never two pushes to one PLC at a time
        assert observer.verify_audit().ok
        observer.close()
    finally:
        for plc in plcs:
            plc.close()
