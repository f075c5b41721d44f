"""The trust-list engine: a certificate authority and trust-list manager that knows no protocol.

Everything protocol-specific (OPC UA, MQTT, the CLI) lives in the packages above this one and talks to
the engine through `trustlists.engine.Engine` and the pydantic models in `trustlists.models`.
"""
