"""Operator errors as an operator meets them: the real `otpki` executable in a subprocess, one line, exit 2.

Every server command is started on an address it cannot have (a port another socket holds, a TEST-NET
address that is not this machine's, port 70000, an http:// endpoint) and must say so in exactly one line
on stderr, with no traceback. Text that is not ours (a credentials name, a group name, a config key) is
printed verbatim, never interpreted as rich markup.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

OTPKI = Path(sys.executable).parent / "otpki"
PASS = "a long enough test passphrase"
UNASSIGNABLE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never an address of this machine


def run(data: Path, *args: str, extra_env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTPKI_")},
           "OTPKI_CA_PASSPHRASE": PASS, "COLUMNS": "400", **(extra_env or {})}
    return subprocess.run([str(OTPKI), "-d", str(data), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, check=False)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line of a command that exited 2; fails on a traceback or any other output."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("operator-errors") / "pki"
    d.parent.joinpath("in.toml").write_text('[pki.root]\nkey_type = "ec-p256"\n')
    res = run(d, "init", "--config", str(d.parent / "in.toml"))
    assert res.returncode == 0, res.stderr
    return d


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write_config(data: Path, text: str) -> None:
    (data / "otpki.toml").write_text(text)


@pytest.fixture
def config(data: Path) -> Iterator[None]:
    """The test may rewrite otpki.toml; the next test gets the original back."""
    original = (data / "otpki.toml").read_text()
    yield
    write_config(data, original)


# -- gds serve ----------------------------------------------------------------------------------------------------

def test_gds_serve_on_a_port_in_use(data: Path, busy_port: int) -> None:
    line = one_error_line(run(data, "gds", "serve", "--endpoint", f"opc.tcp://127.0.0.1:{busy_port}/otpki/gds"))
    assert line == (f"error: the GDS cannot listen on 127.0.0.1:{busy_port}: the port is in use by another program "
                    "(or another otpki); stop it or choose another port (--endpoint)")


def test_gds_serve_on_an_address_of_another_machine(data: Path) -> None:
    line = one_error_line(run(data, "gds", "serve", "--endpoint", f"opc.tcp://{UNASSIGNABLE}:4840/otpki/gds"))
    assert line == (f"error: the GDS cannot listen on {UNASSIGNABLE}:4840: {UNASSIGNABLE} is not an address of this "
                    "machine; use one of its addresses, 127.0.0.1 for this machine only or 0.0.0.0 for all "
                    "(--endpoint)")


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("opc.tcp://127.0.0.1:70000/otpki/gds", "the port is out of range (1-65535)"),
    ("http://127.0.0.1:4840/otpki/gds", "has http://; OPC UA binary endpoints are opc.tcp://HOST:PORT/PATH"),
    ("opc.tcp://127.0.0.1/otpki/gds", "names no port"),
])
def test_gds_serve_refuses_a_bad_endpoint(data: Path, endpoint: str, problem: str) -> None:
    line = one_error_line(run(data, "gds", "serve", "--endpoint", endpoint))
    assert line.startswith(f"error: endpoint {endpoint!r}") and problem in line, line


def test_gds_endpoint_in_the_config_file_is_checked_at_load(data: Path, config: None) -> None:
    write_config(data, '[gds]\nendpoint = "http://127.0.0.1:4840/otpki/gds"\n')
    line = one_error_line(run(data, "gds", "serve"))
    assert line.startswith(f"error: {data / 'otpki.toml'}: [gds] endpoint: endpoint 'http://127.0.0.1:4840/otpki/gds' "
                           "has http://"), line


# -- mqtt serve ---------------------------------------------------------------------------------------------------

def test_mqtt_serve_on_a_port_in_use(data: Path, busy_port: int) -> None:
    line = one_error_line(run(data, "mqtt", "serve", "--port", str(busy_port)))
    assert line == (f"error: the MQTT broker cannot listen on 127.0.0.1:{busy_port}: the port is in use by another "
                    "program (or another otpki); stop it or choose another port (--host/--port)")


def test_mqtt_serve_on_an_address_of_another_machine(data: Path) -> None:
    line = one_error_line(run(data, "mqtt", "serve", "--host", UNASSIGNABLE, "--port", "8883"))
    assert f"cannot listen on {UNASSIGNABLE}:8883: {UNASSIGNABLE} is not an address of this machine" in line


def test_mqtt_serve_port_out_of_range(data: Path) -> None:
    line = one_error_line(run(data, "mqtt", "serve", "--port", "70000"))
    assert line == "error: the MQTT broker cannot listen on port 70000: ports are 0-65535 (--host/--port)"


def test_mqtt_serve_port_from_the_config_file_in_use(data: Path, busy_port: int, config: None) -> None:
    write_config(data, f"[mqtt]\nport = {busy_port}\n")
    line = one_error_line(run(data, "mqtt", "serve"))
    assert f"cannot listen on 127.0.0.1:{busy_port}: the port is in use" in line
    assert line.endswith(f"([mqtt] host and port in {data / 'otpki.toml'})"), line


# -- push --every, targets, mqtt sync --------------------------------------------------------------------------------

def test_push_target_endpoint_must_be_opc_tcp(data: Path) -> None:
    line = one_error_line(run(data, "targets", "add", "press-9", "http://127.0.0.1:4840/plc", "--credentials", "plc"))
    assert "endpoint 'http://127.0.0.1:4840/plc' has http://" in line
    listed = run(data, "targets", "list", "--json")
    assert listed.returncode == 0 and "press-9" not in listed.stdout  # nothing was registered


def test_push_every_refuses_what_it_would_ignore(data: Path) -> None:
    # The scheduler serves every due target: an ENDPOINT given with --every used to be dropped silently.
    line = one_error_line(run(data, "push", "opc.tcp://127.0.0.1:4840/plc", "--every", "5", timeout=30))
    assert "--every pushes to every due target" in line


def test_mqtt_sync_bad_mosquitto_settings(data: Path, config: None) -> None:
    write_config(data, "[mqtt.mosquitto]\nadmin_port = 70000\n")
    line = one_error_line(run(data, "mqtt", "sync", extra_env={"OTPKI_MQTT_ADMIN_PASSWORD": "pw"}))
    assert line == (f"error: {data / 'otpki.toml'}: [mqtt.mosquitto] admin_port: Input should be less than or "
                    "equal to 65535")
    write_config(data, "[mqtt.mosquitto]\nadmin_prot = 1884\n")
    line = one_error_line(run(data, "mqtt", "sync", extra_env={"OTPKI_MQTT_ADMIN_PASSWORD": "pw"}))
    assert line.endswith("[mqtt.mosquitto] admin_prot: unknown key (did you mean admin_port?)"), line


# -- unknown keys ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "expected"), [
    ('[gds]\nendpiont = "opc.tcp://127.0.0.1:4840/x"\n', "[gds] endpiont: unknown key (did you mean endpoint?)"),
    ('[pki.groups.mqtt-device]\nlifetme = 3\n', "[pki.groups.mqtt-device] lifetme: unknown key"),
    ('[[gds.access.users]]\nname = "a"\npassword_hash = "x"\nrolse = []\n',
     "[[gds.access.users]] #1 rolse: unknown key (did you mean roles?)"),
    ('[push.credentials.plc]\nusernme = "admin"\n', "[push.credentials.plc] usernme: unknown key (did you mean "
                                                    "username?)"),
    ('[pki.groups.mqtt-device.fronts.mqtt]\npublsh = ["plant/{device}"]\n',
     "[pki.groups.mqtt-device.fronts.mqtt] publsh: unknown key (did you mean publish?)"),
    ('[gsd]\nendpoint = "opc.tcp://127.0.0.1:4840/x"\n', "[gsd]: unknown key (did you mean gds?)"),
])
def test_unknown_keys_are_named_with_their_table(data: Path, config: None, toml: str, expected: str) -> None:
    write_config(data, toml)
    line = one_error_line(run(data, "ca", "list"))
    assert line.startswith(f"error: {data / 'otpki.toml'}: ") and expected in line, line


# -- text that is not ours ------------------------------------------------------------------------------------------

def test_foreign_text_is_printed_verbatim(data: Path) -> None:
    # A stray closing tag used to crash rich (MarkupError traceback); an opening one lost its brackets.
    assert one_error_line(run(data, "certs", "show", "[/]")) == "error: no certificate with serial [/]"
    assert "unknown certificate group '[bold]x[/]'" in one_error_line(run(data, "trustlist", "show", "[bold]x[/]"))


def test_push_error_text_is_shown_verbatim(data: Path) -> None:
    # The target names credentials that are not configured: the push fails with a message carrying `[...]`.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"opc.tcp://127.0.0.1:{closed.getsockname()[1]}/plc"
    added = run(data, "targets", "add", "press-7", endpoint, "--credentials", "[bold]x[/]")
    assert added.returncode == 0, added.stderr
    pushed = run(data, "push", endpoint)
    assert pushed.returncode == 1 and "Traceback" not in pushed.stderr, pushed.stderr
    assert "no [push.credentials.[bold]x[/]] in otpki.toml" in pushed.stdout, pushed.stdout
    listed = run(data, "targets", "list")
    assert "no [push.credentials.[bold]x[/]] in otpki.toml" in listed.stdout, listed.stdout
