#!/usr/bin/env bash
# Run the whole test suite (sets the machine up first if needed). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
# Type check (configuration: [tool.mypy] in pyproject.toml); its cache is .mypy_cache, so a rerun checks only what
# changed.
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
