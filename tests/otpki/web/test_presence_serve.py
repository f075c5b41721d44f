"""Under `otpki serve` with the embedded broker, the console's Devices page says which devices are online: the
parts `build_parts` makes (the MQTT part and the web listener on one engine) are started here in the test's loop,
a simulated device connects over mTLS, and the page (read over real HTTP) shows it online since the moment the
broker admitted it, by the engine's clock; once it disconnects, offline with when it was last seen."""

from __future__ import annotations

import asyncio
import re
import ssl
from datetime import timedelta
from pathlib import Path

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from otpki.config import EnvSettings, FileSettings, MqttSettings, ServeSettings, WebSettings, build_settings
from otpki.serve.mqtt import EmbeddedMqtt
from otpki.serve.runner import ServeOptions, build_parts
from otpki.serve.supervisor import Supervisor
from otpki.web.listener import WebListeners
from simulators.mqtt_device import DeviceConfig, MqttDevice
from tests.mqtt_broker_auth.conftest import issue_device
from tests.otpki.web.conftest import PASSWORD, Console
from tests.otpki.web.test_pages import page_login
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.testing import Clock, make_engine


def _row(html: str, name: str) -> str:
    start = html.index(f"<td>{name}</td>")
    return html[start:html.index("</tr>", start)]


async def test_devices_page_under_serve_shows_who_is_online(web_engine: tuple[Engine, Clock], tmp_path: Path) -> None:
    engine, clock = web_engine
    secret = engine.accounts.add_user("view", "viewer", PASSWORD, actor="tester").totp_secret
    # Plain HTTP on loopback (`[web] tls = false`): the listener's own certificate is not what this test is about.
    settings = build_settings(FileSettings(serve=ServeSettings(gds=False, push=False), mqtt=MqttSettings(port=0),
                                           web=WebSettings(listen="127.0.0.1:0", tls=False)),
                              tmp_path / "data", EnvSettings())
    parts = build_parts(engine, settings, ServeOptions(), Supervisor([]), lambda _line: None)
    mqtt = next(p for p in parts if isinstance(p, EmbeddedMqtt))
    web = next(p for p in parts if isinstance(p, WebListeners))
    device: MqttDevice | None = None
    await mqtt.start()
    try:
        await web.start()
        assert web.main is not None and mqtt.broker is not None
        broker: EmbeddedBroker = mqtt.broker
        console = Console(url=web.main.url, engine=engine, clock=clock, tls=ssl.create_default_context(),
                          secrets={"view": secret}, tls_files=(tmp_path, tmp_path))  # plain HTTP: TLS unused
        ca_file = tmp_path / "broker-ca.pem"
        ca_file.write_bytes(broker.server_ca_pem())
        workdir = tmp_path / "devices" / "pump-3"
        cert = await run_blocking(issue_device, engine, "pump-3", workdir)
        await run_blocking(engine.registry.register, group="mqtt-device", name="pump-4", actor="tester")
        async with console.client() as client:
            await page_login(console, client, "view")
            html = (await client.get("/devices")).text
            assert 'class="presence offline">offline' in _row(html, "pump-3")
            assert '<td class="last-seen">never</td>' in _row(html, "pump-3")

            admitted_at = clock.now
            device = MqttDevice(DeviceConfig(name="pump-3", site="north", port=broker.port, ca_file=ca_file,
                                             workdir=workdir, bootstrap_cert_file=cert.cert_file,
                                             bootstrap_key_file=cert.key_file, telemetry_interval_s=0.2,
                                             reconnect_attempts=1, reconnect_delay_s=0.2))
            device.start()
            await asyncio.wait_for(device.online.wait(), 30)
            html = (await client.get("/devices")).text
            assert 'class="presence online">online' in _row(html, "pump-3")
            overview = (await client.get("/")).text  # the overview counts the same sessions
            assert re.search(r'devices-online"><a href="/devices"><span class="n">1</span> MQTT devices online<',
                             overview), overview
            assert f"connected since {admitted_at:%Y-%m-%d %H:%M:%S}" in _row(html, "pump-3")
            assert 'class="presence offline">offline' in _row(html, "pump-4")

            clock.now += timedelta(minutes=5)
            left_at = clock.now
            await device.stop()
            device = None
            deadline = asyncio.get_running_loop().time() + 30
            while "pump-3" in broker.online_devices():  # the broker notices the closed connection
                assert asyncio.get_running_loop().time() < deadline, "the broker kept the session"
                await asyncio.sleep(0.05)
            html = (await client.get("/devices")).text
            assert 'class="presence offline">offline' in _row(html, "pump-3")
            assert f"{left_at:%Y-%m-%d %H:%M:%S}" in _row(html, "pump-3")
    finally:
        if device is not None:
            await device.stop()
        await web.stop()
        await mqtt.stop()

    # A restart: new parts, a new broker that saw nothing. The last-seen time was stored at the disconnect; another
    # instance on the store (its own engine) shows it too, on its page and in the API.
    clock.now += timedelta(hours=2)
    other = await run_blocking(make_engine, tmp_path / "pki", clock=clock, config=engine.config)
    parts = build_parts(other, settings, ServeOptions(), Supervisor([]), lambda _line: None)
    mqtt = next(p for p in parts if isinstance(p, EmbeddedMqtt))
    web = next(p for p in parts if isinstance(p, WebListeners))
    await mqtt.start()
    try:
        await web.start()
        assert web.main is not None
        console = Console(url=web.main.url, engine=other, clock=clock, tls=ssl.create_default_context(),
                          secrets={"view": secret}, tls_files=(tmp_path, tmp_path))
        async with console.client() as client:
            await page_login(console, client, "view")
            html = (await client.get("/devices")).text
            assert 'class="presence offline">offline' in _row(html, "pump-3")
            assert f'<td class="last-seen">{left_at:%Y-%m-%d %H:%M:%S}</td>' in _row(html, "pump-3")
            assert '<td class="last-seen">never</td>' in _row(html, "pump-4")
            listed = (await client.get("/api/v1/devices")).json()
            seen = {d["name"]: d["last_seen"] for d in listed["devices"]}
            assert seen["pump-4"] is None and seen["pump-3"].startswith(f"{left_at:%Y-%m-%dT%H:%M:%S}")
    finally:
        await web.stop()
        await mqtt.stop()
        await run_blocking(other.close)
