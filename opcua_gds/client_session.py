"""How otpki opens asyncua client sessions to servers it manages (PLCs, the GDS).

asyncua 2.1 runs a health probe on every client: each `watchdog_intervall` (default 1 s) it reads
ServerStatus.State with a timeout of min(session timeout / 2, watchdog_intervall). A PLC that is busy for
just over a second (a key generation, a plant of fifty simulated PLCs sharing one core) fails that probe and
the client marks itself disconnected, so the next call of a push fails with "client is disconnected" even
though the server is fine. otpki's sessions are short administrative conversations in which every request
already has its own timeout, so the probe gets the request timeout too.
"""

from __future__ import annotations

from asyncua import Client


def admin_client(url: str, *, timeout_s: float) -> Client:
    return Client(url, timeout=timeout_s, watchdog_intervall=timeout_s)
