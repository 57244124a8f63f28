#!/usr/bin/env bash
# The test suite, from a fresh machine: a virtual environment with the Python deps, then pytest. Extra arguments
# go to pytest (e.g. `scripts/test.sh tests/unit -x`).
# Python packages go into .venv (created here; an active virtual environment is used as it is), so a system
# Python that refuses pip installs (PEP 668 "externally-managed-environment", stock Debian/Ubuntu) is never touched.
# After collection, the servers and tools the *selected* tests use are built or installed, with progress on
# the terminal, before the first test runs (tests/support/servers.py): the Collector, Tempo, Prometheus 3,
# Alertmanager, compose-check and Grafana from their Go modules (scripts/build-servers.sh, cached in
# ~/.cache/qt-telemetry), Debian's prometheus for promtool (scripts/install-debian-packages.sh). The whole
# suite needs Go and apt-get; the unit tests without tests/unit/test_stack_configs.py need neither.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv="$VIRTUAL_ENV"
else
    venv="$PWD/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian/Ubuntu ship venv without ensurepip: python3-venv (or python3.X-venv) adds it.
            rm -rf "$venv"
            if command -v apt-get >/dev/null; then
                sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
                version=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
                echo "scripts/test.sh: installing python${version}-venv (apt-get) for the virtual environment" >&2
                $sudo apt-get update -qq >&2
                $sudo apt-get install -y -qq "python${version}-venv" >&2 || $sudo apt-get install -y -qq python3-venv >&2
            fi
            python3 -m venv "$venv"
        fi
    fi
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"

export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest "$@"
