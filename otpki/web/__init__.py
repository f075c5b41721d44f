"""The web side of `otpki serve`: the listeners (HTTPS for the console, API and EST; plain HTTP for OCSP and
CRLs), the operator console and the REST API (`create_app` in otpki/web/app.py), on the engine's front door."""
