"""The OCSP responder over HTTP (RFC 6960 appendix A, the lightweight profile of RFC 5019): the router in
`http_fronts.ocsp.router`, its settings in `http_fronts.ocsp.settings` (importable without the web stack, so the
configuration can embed them without loading FastAPI)."""
