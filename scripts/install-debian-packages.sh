#!/usr/bin/env bash
# Install Debian packages the selected tests use (tests/support/servers.py asks for them when they are
# missing): `prometheus` for Debian's promtool, `gcc` when Grafana has to be built (cgo). Uses sudo when
# not root. Everything goes to stderr (the tests show it live).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: install-debian-packages.sh package..." >&2; exit 2; }
command -v apt-get >/dev/null || { echo "install-debian-packages: needs apt-get; install $* yourself" >&2; exit 1; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-debian-packages: installing $* (apt-get; about a minute)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
