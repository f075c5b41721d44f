"""The OCSP responder over HTTP (RFC 6960 appendix A, the lightweight profile of RFC 5019)."""

from http_fronts.ocsp.router import ocsp_router
from http_fronts.ocsp.settings import OcspSettings

__all__ = ["OcspSettings", "ocsp_router"]
