"""The embedded amqtt broker with otpki's device gate: TLS admission, pre-authentication limits, live sessions.

- `broker.py`       `EmbeddedBroker`, the broker otpki runs itself
- `amqtt_plugin.py` the gate inside amqtt: authenticate, authorize, keep the session table
  (on the hooks of `mqtt_broker_auth/_amqtt_compat.py`, the one place amqtt's internals are used)
- `tls_admission.py`, `listener_tls.py` the listener's TLS and the check right after the handshake
- `broker_limits.py`, `packet_limit.py` limits on what an unauthenticated connection may cost
- `live_sessions.py` dropping sessions whose certificate was revoked
"""
