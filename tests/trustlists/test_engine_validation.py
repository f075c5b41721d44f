"""Validating engine-issued certificates against the engine's own trust lists (what MQTT and OPC UA will use)."""

from __future__ import annotations

from opcua_gds.validation_status import status_code
from trustlists.engine import Engine
from trustlists.models import Owner, RevocationReason
from trustlists.testing import make_csr
from trustlists.validation import ValidationCode, ValidationOptions


def test_engine_issued_chain_validates_and_revocation_bites_at_once(engine: Engine, device: Owner,
                                                                    scada: Owner) -> None:
    issued = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    chain = [issued.certificate_der, issued.chain_der[0]]
    opts = ValidationOptions(required_eku="clientAuth")
    result = engine.validator("mqtt-device").validate(chain, opts)
    assert result.ok, result.reason

    # The same certificate is not trusted by another group's trust list.
    other = engine.validator("opcua-application").validate(chain, opts)
    assert other.code is ValidationCode.UNTRUSTED

    # Revocation is visible through the live index right away.
    engine.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    revoked = engine.validator("mqtt-device").validate(chain, opts)
    assert revoked.code is ValidationCode.REVOKED and status_code(revoked) == 0x801D0000


def test_opcua_application_uri_and_issuer_revocation(engine: Engine, scada: Owner) -> None:
    issued = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                             actor="t")
    chain = [issued.certificate_der, *issued.chain_der[:-1]]
    validator = engine.validator("opcua-application")
    good = validator.validate(chain, ValidationOptions(application_uri="urn:plant:scada-1", opcua_application=True))
    assert good.ok, good.reason
    wrong = validator.validate(chain, ValidationOptions(application_uri="urn:plant:other"))
    assert wrong.code is ValidationCode.URI_INVALID
    ca = next(c for c in engine.hierarchy.list() if c.id == issued.record.issuer_ca_id)
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="t")
    # The revoked CA drops out of the trust list; offered by the peer it still chains to the root, but the
    # trust check (Part 4 step 5) fails before the revocation check (step 11) is reached.
    after = engine.validator("opcua-application").validate(chain, ValidationOptions())
    assert after.code is ValidationCode.UNTRUSTED
