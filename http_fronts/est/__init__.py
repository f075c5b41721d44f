"""EST enrollment (RFC 7030) over HTTPS: `/.well-known/est/`, one label per certificate group.

The router is `http_fronts.est.router.est_router`; the settings (`http_fronts.est.settings`, read by every CLI
command through otpki.config) import neither FastAPI nor the engine's heavy parts, so this package imports nothing.
"""
