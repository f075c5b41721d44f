"""Trust-list exports: pure functions from a TrustList to the formats other software reads.

No protocol package is imported here; OPC UA and MQTT fronts call these.
"""

from trustlists.exports.json_export import TrustListJson, trustlist_to_json
from trustlists.exports.mosquitto_files import mosquitto_bundle, write_mosquitto_files
from trustlists.exports.pki_folders import PkiExportSummary, write_pki_folders
from trustlists.exports.trustlist_binary import decode_trustlist, encode_trustlist

__all__ = [
    "PkiExportSummary",
    "TrustListJson",
    "decode_trustlist",
    "encode_trustlist",
    "mosquitto_bundle",
    "trustlist_to_json",
    "write_mosquitto_files",
    "write_pki_folders",
]
