#!/usr/bin/env bash
# The test suite, from a fresh machine: Python deps, then pytest. Extra arguments go to pytest
# (e.g. `scripts/test.sh tests/unit -x`).
# After collection, the servers and tools the *selected* tests use are built or installed, with progress on
# the terminal, before the first test runs (tests/support/servers.py): the Collector, Tempo, Prometheus 3,
# Alertmanager, compose-check and Grafana from their Go modules (scripts/build-servers.sh, cached in
# ~/.cache/qt-telemetry), Debian's prometheus for promtool (scripts/install-debian-packages.sh). The whole
# suite needs Go and apt-get; the unit tests without tests/unit/test_stack_configs.py need neither.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"

exec python3 -m pytest "$@"
