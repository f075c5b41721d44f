"""Parts whose library reports no end of its own are watched: a GDS whose listener goes away is restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from opcua_gds.gds.settings import GdsSettings
from otpki.config import EnvSettings, FileSettings, build_settings
from otpki.serve.parts import GdsPart
from otpki.serve.supervisor import Supervisor
from trustlists.testing import PASSPHRASE, eventually, free_port, initialized_engine


async def test_a_gds_whose_listener_closed_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTPKI_CA_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.setenv("OTPKI_ACTOR", "test")
    port = free_port()
    file = FileSettings(gds=GdsSettings(endpoint=f"opc.tcp://127.0.0.1:{port}/otpki/gds"))
    settings = build_settings(file, tmp_path / "pki", EnvSettings())
    eng = initialized_engine(tmp_path / "pki")
    part = GdsPart(eng, settings)
    sup = Supervisor([part], initial_backoff_s=0.01)
    try:
        await sup.start()
        assert sup.status()[0].state == "running"
        first = part.server
        assert first is not None and first.server is not None and first.server.bserver is not None
        listener = first.server.bserver._server  # asyncua's own listener, closed under the running GDS
        assert listener is not None
        listener.close()
        await eventually(lambda: sup.status()[0].restarts == 1 and sup.status()[0].state == "running",
                         "the GDS to be restarted")
        assert "stopped accepting connections" in (sup.status()[0].last_error or "")
        assert part.server is not None and part.server is not first and part.server.is_listening()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)  # on its port again
        writer.close()
        await writer.wait_closed()
    finally:
        await sup.stop()
        eng.close()
