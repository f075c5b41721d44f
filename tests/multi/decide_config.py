"""The PKI configuration of the decision race (tests/multi/test_decision_race.py): an RSA-2048 root, so that
making the hierarchy is quick; opcua-user requests wait for an administrator."""

from __future__ import annotations

from trustlists.models import KeyType
from trustlists.policy import PkiConfig, load_default_config


def config() -> PkiConfig:
    cfg = load_default_config()
    return cfg.model_copy(update={"root": cfg.root.model_copy(update={"key_type": KeyType.RSA2048})})
