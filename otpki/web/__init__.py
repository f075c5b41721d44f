"""The operator console and the REST API (`create_app` in otpki/web/app.py): FastAPI on the engine's front door."""
