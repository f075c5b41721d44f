"""Which MQTT devices are online: what the console's Devices page shows beside the engine's records.

Only a broker that holds the sessions knows it: under `otpki serve` with the embedded broker, its MQTT part is the
provider. Without one (the Mosquitto sync, or the console alone) the page says "unknown", never a guess.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pydantic import BaseModel


class DevicePresence(Protocol):
    def online_devices(self) -> dict[str, datetime] | None:
        """Device name -> connected since, for the live sessions; None while the broker is not running."""

    def last_seen(self) -> dict[str, datetime] | None:
        """Device name -> when its last connection ended (as far as the running broker knows)."""


class Presence(BaseModel):
    known: bool  # a broker answered whether it is online: False shows "unknown"
    online: bool = False
    connected_since: datetime | None = None
    last_seen: datetime | None = None  # the later of the store's (every instance's brokers) and this broker's


class PresenceSnapshot:
    """One reading of the provider, for one page: every row is judged against the same moment."""

    def __init__(self, provider: DevicePresence | None) -> None:
        self._online = provider.online_devices() if provider is not None else None
        self._last_seen = (provider.last_seen() if provider is not None and self._online is not None else None) or {}

    def of(self, device: str, stored: datetime | None = None) -> Presence:
        """`stored`: the device's last-seen time in the store (written by whichever instance's broker saw it)."""
        if self._online is None:
            return Presence(known=False, last_seen=stored)
        since = self._online.get(device)
        if since is not None:
            return Presence(known=True, online=True, connected_since=since, last_seen=since)
        seen = [t for t in (self._last_seen.get(device), stored) if t is not None]
        return Presence(known=True, online=False, last_seen=max(seen, default=None))
