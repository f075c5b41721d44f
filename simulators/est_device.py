"""`python -m simulators.est_device`: an HMI or gateway that enrolls over EST (RFC 7030) with its IDevID,
re-enrolls with the operational certificate it got, and then has its certificate checked over OCSP.

    python -m simulators.est_device --est https://pki.plant:8443 --ca-file root.pem --name hmi-1 \\
        --idevid-cert idevid.crt --idevid-key idevid.key --dir ./hmi-1 [--label hmi] [--ocsp http://pki.plant/ocsp]

Steps: GET cacerts (the chain it will need), POST simpleenroll with the IDevID as TLS client certificate and a CSR
for a key made here, POST simplereenroll with that operational certificate and a CSR for a new key, then (with
--ocsp) one OCSP request for the current certificate. Prints one JSON line: the serials, the OCSP status. The
device's keys and certificates are kept in --dir (keys with owner-only permissions).

The wire is plain http.client over ssl: a device speaks EST with whatever its firmware has, not with our code.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from trustlists.safe_files import private_directory, write_public, write_secret

__all__ = ["EstDevice", "EstError"]


class EstError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"EST answered {status}: {text.strip()}")
        self.status = status
        self.text = text


@dataclass
class _Credential:
    cert: Path
    key: Path


class EstDevice:
    """One device's EST client (blocking: a device has one thing to do at a time)."""

    def __init__(self, est_url: str, *, ca_file: Path, name: str, idevid_cert: Path, idevid_key: Path,
                 directory: Path, label: str | None = None, timeout_s: float = 30.0) -> None:
        url = urllib.parse.urlsplit(est_url)
        if url.scheme != "https" or url.hostname is None:
            raise ValueError(f"{est_url!r}: EST runs over https://HOST:PORT")
        self._host, self._port = url.hostname, url.port or 443
        self._path = "/.well-known/est/" + (f"{label}/" if label else "")
        self._ca_file = ca_file
        self.name = name
        self._idevid = _Credential(idevid_cert, idevid_key)
        self.directory = directory
        private_directory(directory)
        self._timeout = timeout_s
        self.chain: list[x509.Certificate] = []
        self.certificate: x509.Certificate | None = None

    # -- EST ------------------------------------------------------------------------------------------------------

    def cacerts(self) -> list[x509.Certificate]:
        status, _, body = self._request("GET", "cacerts", None, None)
        if status != 200:
            raise EstError(status, body.decode(errors="replace"))
        self.chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split())))
        write_public(self.directory / "cacerts.pem", b"".join(c.public_bytes(serialization.Encoding.PEM)
                                                              for c in self.chain))
        return self.chain

    def enroll(self) -> x509.Certificate:
        """simpleenroll with the IDevID: the first operational certificate."""
        return self._enroll("simpleenroll", self._idevid)

    def reenroll(self) -> x509.Certificate:
        """simplereenroll with the current operational certificate, for a new key."""
        return self._enroll("simplereenroll", _Credential(self.directory / "device.crt",
                                                          self.directory / "device.key"))

    def _enroll(self, operation: str, credential: _Credential) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
               .sign(key, hashes.SHA256()))
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        status, _, answer = self._request("POST", operation, body, credential)
        if status != 200:
            raise EstError(status, answer.decode(errors="replace"))
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(answer.split())))[0]
        # The new identity replaces the old one only once both are safely written.
        write_secret(self.directory / "device.key.new", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        write_public(self.directory / "device.crt.new", cert.public_bytes(serialization.Encoding.PEM))
        (self.directory / "device.key.new").replace(self.directory / "device.key")
        (self.directory / "device.crt.new").replace(self.directory / "device.crt")
        self.certificate = cert
        return cert

    def _request(self, method: str, operation: str, body: bytes | None,
                 credential: _Credential | None) -> tuple[int, dict[str, str], bytes]:
        context = ssl.create_default_context(cafile=str(self._ca_file))
        if credential is not None:
            context.load_cert_chain(str(credential.cert), str(credential.key))
        connection = http.client.HTTPSConnection(self._host, self._port, context=context, timeout=self._timeout)
        headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"} if body else {}
        try:
            connection.request(method, self._path + operation, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    # -- OCSP -----------------------------------------------------------------------------------------------------

    def ocsp_status(self, ocsp_url: str) -> str:
        """good / revoked / unknown for the current certificate, from the responder at `ocsp_url` (HTTP POST)."""
        if self.certificate is None or not self.chain:
            raise ValueError("enroll first (and fetch cacerts)")
        issuer = next(c for c in self.chain if c.subject == self.certificate.issuer)
        request = ocsp.OCSPRequestBuilder().add_certificate(self.certificate, issuer, hashes.SHA1()).build()
        url = urllib.parse.urlsplit(ocsp_url)
        if url.hostname is None:
            raise ValueError(f"{ocsp_url!r} is not an http:// URL")
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=self._timeout,
                                                     context=ssl.create_default_context(cafile=str(self._ca_file)))
        else:
            connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=self._timeout)
        try:
            connection.request("POST", url.path or "/", body=request.public_bytes(serialization.Encoding.DER),
                               headers={"Content-Type": "application/ocsp-request"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise EstError(response.status, "OCSP responder: " + data[:200].decode(errors="replace"))
        answer = ocsp.load_der_ocsp_response(data)
        if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise EstError(response.status, f"OCSP responder: {answer.response_status.name}")
        return answer.certificate_status.name.lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.est_device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--est", required=True, help="https://HOST:PORT of the EST server")
    parser.add_argument("--ca-file", type=Path, required=True, help="the plant root CA (PEM), to verify the server")
    parser.add_argument("--name", required=True, help="the device's registered name (the CSR's CN)")
    parser.add_argument("--idevid-cert", type=Path, required=True)
    parser.add_argument("--idevid-key", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where the device keeps its keys and certificates")
    parser.add_argument("--label", help="the EST label of the device's certificate group")
    parser.add_argument("--ocsp", help="the OCSP responder's URL (e.g. http://HOST:PORT/ocsp)")
    args = parser.parse_args(argv)
    device = EstDevice(args.est, ca_file=args.ca_file, name=args.name, idevid_cert=args.idevid_cert,
                       idevid_key=args.idevid_key, directory=args.dir, label=args.label)
    try:
        device.cacerts()
        first = device.enroll()
        second = device.reenroll()
        status = device.ocsp_status(args.ocsp) if args.ocsp else None
    except (EstError, OSError, ssl.SSLError) as exc:
        print(f"est_device {args.name}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"device": args.name, "enrolled": f"{first.serial_number:x}",
                      "reenrolled": f"{second.serial_number:x}", "ocsp": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
