"""The registered names (in the broker group) of the brokers' own TLS identities.

Light on purpose: `otpki.config` reserves these names for every command, and the brokers register under them.
"""

from __future__ import annotations


def embedded_broker_owner_name(host: str, *, bootstrap: bool = False) -> str:
    """The registered name (in the broker group) of the embedded broker's TLS identity on `host`; the bootstrap
    listener has its own, so the two never renew each other's certificate."""
    return f"{'bootstrap-broker' if bootstrap else 'broker'}-{host}"


def mosquitto_owner_name(host: str) -> str:
    """The registered name (in the broker group) of an operator's Mosquitto TLS identity on `host`."""
    return f"mosquitto-{host}"
