"""Push certificate management (OPC 10000-12 7.10): otpki pushing certificates and trust lists to servers.

- `client.py`       one push session to a server's ServerConfiguration
- `server_identity.py` deciding the server at the other end is the one registered
- `rollout.py`      the fleet rollout over every push target
- `settings.py`     its [push] settings (light: otpki.config loads them)
- `target/`         the server side of push, for any asyncua server
"""
