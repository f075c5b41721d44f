"""MQTT broker device authentication by X.509 client certificates (issue 5)."""
