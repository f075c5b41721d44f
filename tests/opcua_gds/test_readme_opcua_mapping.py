"""README "How it maps to OPC 10000-12" names every GDS and push method and every GDS object otpki serves, each in a
row with its NodeId and a status, so the table cannot fall behind the address space."""

from __future__ import annotations

import re
from pathlib import Path

from opcua_gds.nodeids import (
    CertificateDirectoryMethods,
    CertificateGroups,
    DirectoryMethods,
    GdsObjects,
    MethodSpec,
    ServerConfigurationMethods,
)

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## How it maps to OPC 10000-12\n"
NODE_ID = re.compile(r"(?<![\w:])([01]):(\d+)(?!\d)")


def _rows() -> list[list[str]]:
    text = README.read_text()
    assert HEADING in text, "the README lost its OPC 10000-12 section"
    section = text[text.index(HEADING) + len(HEADING):]
    section = section[:section.index("\n## ")]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == ["OPC 10000-12", "NodeId", "otpki", "Status"]
    return rows[2:]  # past the header and its separator


def _ids(cell: str) -> set[tuple[int, int]]:
    return {(int(ns), int(i)) for ns, i in NODE_ID.findall(cell)}


def _row_of(rows: list[list[str]], name: str, namespace: int, identifier: int) -> list[str] | None:
    return next((r for r in rows if re.search(rf"\b{name}\b", r[0]) and (namespace, identifier) in _ids(r[1])), None)


def test_every_row_has_a_status() -> None:
    rows = _rows()
    assert rows and all(len(row) == 4 and row[3] for row in rows), [row for row in rows if len(row) != 4 or not row[3]]


def test_every_gds_method_and_object_is_listed_with_its_node_id() -> None:
    rows = _rows()
    application_group = CertificateGroups.GdsDefaultApplicationGroup
    methods: list[MethodSpec] = [*DirectoryMethods.all(), *CertificateDirectoryMethods.all(),
                                 *(application_group.method(name) for name, _ in application_group.trust_list_methods)]
    missing = [f"{spec.name} 1:{spec.instance_id}" for spec in methods
               if _row_of(rows, spec.name, 1, spec.instance_id) is None]
    listed = set().union(*(_ids(row[1]) for row in rows))
    missing += [f"{obj.name} 1:{obj.value}" for obj in GdsObjects if (1, obj.value) not in listed]
    assert missing == []


def test_every_push_method_is_listed() -> None:
    rows = _rows()
    push = [row for row in rows if row[0].startswith("Push:")]
    named = " ".join(row[0] for row in push)
    assert [spec.name for spec in ServerConfigurationMethods.all() if not re.search(rf"\b{spec.name}\b", named)] == []
    bound = [ServerConfigurationMethods.CreateSigningRequest, ServerConfigurationMethods.UpdateCertificate,
             ServerConfigurationMethods.ApplyChanges, ServerConfigurationMethods.CancelChanges,
             ServerConfigurationMethods.GetRejectedList]  # what opcua_gds.push.target binds
    listed = set().union(*(_ids(row[1]) for row in push))
    assert [spec.name for spec in bound if (0, spec.instance_id) not in listed] == []
