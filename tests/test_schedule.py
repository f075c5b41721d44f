"""The start order of the test files (tests/conftest.py START_FIRST) names files that exist, and is applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import START_FIRST

ROOT = Path(__file__).resolve().parents[1]


def test_every_file_started_first_exists() -> None:
    missing = [path for path in START_FIRST if not (ROOT / path).is_file()]
    assert not missing, f"START_FIRST names files that are gone (renamed? update tests/conftest.py): {missing}"
    assert len(set(START_FIRST)) == len(START_FIRST)


def test_collection_starts_with_those_files_in_that_order() -> None:
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "tests/test_free_port.py", *reversed(START_FIRST[:3])],
                               capture_output=True, text=True, check=True, cwd=ROOT, timeout=120).stdout
    files = list(dict.fromkeys(line.split("::", 1)[0] for line in collected.splitlines() if "::" in line))
    assert files == [*START_FIRST[:3], "tests/test_free_port.py"], files
