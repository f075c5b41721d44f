"""What an unauthenticated client can hold on the embedded broker, and for how long.

idle close: K clients at once open a connection to the embedded broker (default BrokerLimits unless --quick)
and then do nothing: "tcp" never starts TLS, "tls" completes the handshake with a valid device certificate and
never sends CONNECT. Each client measures from its TCP connect returning until the server closed the
connection. Target: every one closed within connect_timeout_s + 1 s.
cap refusal: with max_unauthenticated = N, N idle TLS connections are open; the time from TCP connect until the
server closes an (N+1)th connection, per attempt (it is closed before TLS).
Baseline: the configured connect_timeout_s itself; ratio = worst idle close / configured timeout.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ACTOR, emit, note, parse_args, summary, workdir
from bench.mqtt_connect import BrokerThread, open_engine, write_files
from mqtt_broker_auth.embedded.broker_limits import BrokerLimits

SLACK_S = 1.0


def _wait_closed(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the peer closed `sock` (raises if it stays open `limit_s`)."""
    start = time.perf_counter()
    sock.settimeout(0.05)
    while time.perf_counter() - start < limit_s:
        try:
            if not sock.recv(4096):
                break
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            break
    else:
        raise RuntimeError(f"connection still open after {limit_s} s")
    return time.perf_counter() - start


def idle_close_times(port: int, context: ssl.SSLContext | None, k: int, limit_s: float) -> list[float]:
    """K idle connections at once; per connection, TCP connect -> closed by the server (TLS time included)."""
    results: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=limit_s)
            t0 = time.perf_counter()
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw
            with sock:
                _wait_closed(sock, limit_s)
            with lock:
                results.append(time.perf_counter() - t0)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} idle connections failed: {errors[0]!r}")
    return results


def cap_refusal_times(port: int, context: ssl.SSLContext, cap: int, attempts: int) -> list[float]:
    idle = [context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
            for _ in range(cap)]
    try:
        time.sleep(0.2)  # let the server take every slot (it counts at accept)
        times = []
        for _ in range(attempts):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                times.append(_wait_closed(sock, 10))
        return times
    finally:
        for sock in idle:
            sock.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    limits = BrokerLimits(connect_timeout_s=1.0) if args.quick else BrokerLimits()
    k, cap, attempts = (5, 10, 5) if args.quick else (50, 50, 20)
    timeout = limits.connect_timeout_s
    with workdir("mqtt-preauth") as d:
        engine = open_engine(d / "pki")
        engine.hierarchy.initialize(actor=ACTOR)
        broker = BrokerThread(engine, d / "broker", None, limits=limits)
        capped = BrokerThread(engine, d / "broker-capped", None,
                              limits=BrokerLimits(max_unauthenticated=cap, connect_timeout_s=60))
        try:
            server_ca = d / "server-ca.pem"
            server_ca.write_bytes(broker.broker.server_ca_pem())
            owner = engine.registry.register(group="mqtt-device", name="dev-0", site="north", actor=ACTOR)
            issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
            cert, key = write_files(d / "certs", owner.name, issued.certificate_der, issued.chain_der,
                                    issued.private_key or b"")
            context = ssl.create_default_context(cafile=str(server_ca))
            context.load_cert_chain(str(cert), str(key))
            note(f"mqtt_preauth_limits: {k} idle TCP and {k} idle TLS connections, connect_timeout_s={timeout}")
            tcp = idle_close_times(broker.broker.port, None, k, timeout + 30)
            tls = idle_close_times(broker.broker.port, context, k, timeout + 30)
            note(f"mqtt_preauth_limits: {attempts} connections over a cap of {cap}")
            refusals = cap_refusal_times(capped.broker.port, context, cap, attempts)
        finally:
            broker.stop()
            capped.stop()
            engine.close()
    worst = max(tcp + tls)
    emit(benchmark="mqtt_preauth_limits",
         engine={"idle_tcp_closed_after_s": summary(tcp, 3), "idle_tls_closed_after_s": summary(tls, 3),
                 "over_cap_closed_after_s": summary(refusals, 4)},
         baseline={"connect_timeout_s": timeout},
         ratio=worst / timeout, target=f"every idle connection closed within connect_timeout_s + {SLACK_S} s",
         meets_target=worst <= timeout + SLACK_S,
         params={"idle_connections_per_kind": k, "max_unauthenticated": cap, "over_cap_attempts": attempts,
                 "limits": limits.model_dump()})


if __name__ == "__main__":
    main()
