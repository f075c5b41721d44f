"""Certificate enrollment over MQTT: the service that answers devices, and the messages both sides exchange.

- `service.py`  `EnrollmentService`, an MQTT client of the broker that issues and renews device certificates
- `messages.py` the request and reply payloads (shared with the device simulator)
- `settings.py` its [mqtt.enrollment] limits (light: otpki.config loads them)
"""
