#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Python deps, Debian's Prometheus and Alertmanager, the
# Collector and Tempo built from their Go modules (cached outside the repo), then pytest.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Build (or find in the cache) the server binaries; tests read QT_E2E_<NAME> (e.g. QT_E2E_OTELCOL).
servers=$(bash scripts/build-servers.sh)
while IFS='=' read -r name path; do
  export "QT_E2E_$(echo "$name" | tr '[:lower:]' '[:upper:]')=$path"
done <<< "$servers"

exec python3 -m pytest "$@"
