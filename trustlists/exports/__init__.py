"""Trust-list exports: pure functions from a TrustList to the formats other software reads.

No protocol package is imported here: the protocol encodings live with their fronts (the OPC UA
TrustListDataType in `opcua_gds.trustlist_binary`, Mosquitto's cafile/crlfile in
`mqtt_broker_auth.mosquitto.bundle`).
"""

from trustlists.exports.json_export import TrustListJson, trustlist_to_json
from trustlists.exports.pki_folders import PkiExportSummary, write_pki_folders

__all__ = [
    "PkiExportSummary",
    "TrustListJson",
    "trustlist_to_json",
    "write_pki_folders",
]
