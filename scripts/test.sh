#!/usr/bin/env bash
# Run the whole test suite (sets the machine up first if needed). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
# Type check (configuration: [tool.mypy] in pyproject.toml); its cache is .mypy_cache, so a rerun checks only what
# changed.
.venv/bin/mypy || exit 1
# The suite starts hundreds of Python processes (the CLI, servers, workers). With PYTHONDONTWRITEBYTECODE set (as
# some shells and CI images do) each one compiles every otpki module again and pytest re-rewrites every test
# module in each worker: about a quarter of a CLI call's CPU. Compile once here and let the processes keep caches.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q trustlists opcua_gds mqtt_broker_auth http_fronts simulators otpki bench tests \
  > /dev/null || exit 1
# Two pytest-xdist workers per core (at most OTPKI_TEST_WORKERS, default 4): most of a test's time is spent
# waiting on its servers and subprocesses, so two per core keep the cores busy; more outnumber them. --dist loadfile
# keeps each test file on one worker, so module-scoped fixtures (CA hierarchies, brokers, servers) are built once.
# --no-loadscope-reorder: files are handed out in collection order, which tests/conftest.py starts with the longest
# files (xdist would otherwise hand out the files with most tests first, and a long one-test file last).
# `-n 0` (or any -n/--numprocesses given here) overrides it.
parallel=()
case " $* " in
  *" -n"*|*" --numprocesses"*|*" -p no:xdist "*) ;;
  *)
    cores="$(nproc 2>/dev/null || echo 1)"
    cap="${OTPKI_TEST_WORKERS:-4}"
    workers=$(( 2 * cores < cap ? 2 * cores : cap ))
    if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder); fi
    ;;
esac
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
