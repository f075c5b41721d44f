"""The web side of `otpki serve`: the listeners (HTTPS for the console, API and EST; plain HTTP for OCSP and CRLs)."""
