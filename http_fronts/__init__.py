"""The standard HTTP protocols in front of the engine: OCSP (`http_fronts.ocsp`), CRLs over HTTP (`http_fronts.crl`).

Each front is a FastAPI `APIRouter` factory taking an `Engine` and its settings model; `otpki serve` mounts them on
its listeners. They use the engine's public parts only (never its context or store) and import nothing but
`trustlists`.
"""
