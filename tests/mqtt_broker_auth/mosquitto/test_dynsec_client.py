"""The dynsec admin client's bookkeeping of command batches (pure logic: paho's publish is replaced)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt

from mqtt_broker_auth.mosquitto import dynsec as ds


def test_a_batch_whose_connection_drops_as_it_is_sent_fails_once() -> None:
    """The network thread fails every pending batch when the connection drops; a publish that fails at that
    moment must not fail the same batch again (that raised InvalidStateError out of the sync round)."""
    client = ds.DynsecClient("127.0.0.1", 1, "admin", "pw")

    def publish(topic: str, payload: str, qos: int = 0) -> Any:
        client._on_disconnect(client._client, None, None, "connection lost", None)
        return SimpleNamespace(rc=mqtt.MQTT_ERR_NO_CONN)

    client._client.publish = publish  # type: ignore[method-assign]
    fut = client.submit([{"command": "listClients"}])
    error = fut.exception(timeout=1)
    assert isinstance(error, ds.DynsecUnavailable) and "closed" in str(error)
    assert client.lost.is_set()
