"""Mosquitto kept in step with the engine: generated config, safe CA/CRL install, dynsec ACLs, revocation kicks.

- `config.py`   settings and the mosquitto.conf they render to
- `bundle.py`   the cafile/crlfile contents from the device group's trust list
- `files.py`    verified, atomic install of cafile/crlfile (Mosquitto fails open on a bad CRL at reload)
- `dynsec.py`   the dynamic-security admin client over `$CONTROL/dynamic-security/v1` (paho-mqtt)
- `sync.py`     the service: trust-list changes -> files + SIGHUP, registry -> dynsec clients, revocation -> kick
- `process.py`  start/stop a Mosquitto process (tests, demo, bench)
"""
