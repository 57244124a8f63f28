#!/usr/bin/env bash
# Build (once) the servers the end-to-end tests run, from their published Go modules, into a cache outside
# the repo keyed by the manifests' content:
#   otelcol-qt    the OpenTelemetry Collector distribution of collector/builder-config.yaml (ocb builder)
#   tempo         Grafana Tempo at the commit pinned by tempo/build/go.mod (wrapper module)
#   prometheus    Prometheus 3 as pinned by prometheus/build/go.mod (wrapper module) + promtool
#   alertmanager  Alertmanager + amtool (plain go install)
#   compose-check Docker Compose v2's loader (compose-go), to validate docker-compose.yml
#   otelcol-qt-fleet  the fleet distribution of collector/fleet/builder-config.yaml (agent and gateway tiers)
# The versions equal the image tags in docker-compose.yml (tests/unit/test_stack_configs.py checks that).
# Debian's prometheus 2.42 / alertmanager 0.25 are older than those images where the tests care (e.g.
# Alertmanager 0.25 has no webhook url_file), so they are used only for their promtool/amtool checks.
# Prints "name=<path>" lines on stdout; progress goes to stderr.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${QT_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qt-telemetry}
mkdir -p "$cache/bin"
export CGO_ENABLED=0

command -v go >/dev/null || { echo "build-servers: Go is required (https://go.dev/dl/)" >&2; exit 1; }

key() { cat "$@" | sha256sum | cut -c1-16; }
log() { echo "build-servers: $*" >&2; }

# A wrapper module (go.mod + go.sum + tools.go) that requires a server at a pinned version and repeats its
# replace directives; go.sum pins every dependency, so the checksum database is not consulted for them.
wrapper_build() {  # src_dir out_dir package...
  local src=$1 out=$2; shift 2
  [ -x "$out/${1##*/}" ] && return 0
  log "building ${*##*/} from $src (several minutes the first time)"
  local start=$SECONDS work
  work=$(mktemp -d "$cache/build.XXXXXX")
  cp "$src/go.mod" "$src/go.sum" "$src/tools.go" "$work/"
  (cd "$work" && GONOSUMDB=github.com/grafana/tempo GOFLAGS=-mod=readonly \
     go build -trimpath -ldflags="-s -w" -o "$work/bin/" "$@" >&2)
  rm -rf "$out" && mv "$work/bin" "$out" && rm -rf "$work"
  log "built ${*##*/} in $((SECONDS - start))s"
}

# --- OpenTelemetry Collector (ocb builder at the manifest's core version) ------------------------------
manifest="$repo/collector/builder-config.yaml"
col_version=$(sed -n 's/^  version: *//p' "$manifest" | head -1)
col_dir="$cache/otelcol-qt-$(key "$manifest")"
if [ ! -x "$col_dir/otelcol-qt" ]; then
  builder="$cache/bin/builder-v$col_version"
  if [ ! -x "$builder" ]; then
    log "installing the collector builder v$col_version"
    tmp_gobin=$(mktemp -d "$cache/gobin.XXXXXX")
    GOBIN="$tmp_gobin" go install "go.opentelemetry.io/collector/cmd/builder@v$col_version" >&2
    mv "$tmp_gobin/builder" "$builder" && rmdir "$tmp_gobin"
  fi
  log "building otelcol-qt v$col_version (a few minutes the first time)"
  start=$SECONDS
  work=$(mktemp -d "$cache/otelcol-build.XXXXXX")
  (cd "$work" && "$builder" --config="$manifest" >&2)
  rm -rf "$col_dir" && mkdir -p "$col_dir"
  mv "$work/otelcol-qt/otelcol-qt" "$col_dir/otelcol-qt" && rm -rf "$work"
  log "otelcol-qt built in $((SECONDS - start))s"
fi

# --- Tempo and Prometheus (wrapper modules) -------------------------------------------------------------
tempo_src="$repo/tempo/build"
tempo_dir="$cache/tempo-$(key "$tempo_src/go.mod" "$tempo_src/go.sum")"
wrapper_build "$tempo_src" "$tempo_dir" github.com/grafana/tempo/cmd/tempo

prom_src="$repo/prometheus/build"
prom_dir="$cache/prometheus-$(key "$prom_src/go.mod" "$prom_src/go.sum")"
wrapper_build "$prom_src" "$prom_dir" \
  github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool

# --- Alertmanager (no replace directives: plain go install) ---------------------------------------------
ALERTMANAGER_VERSION=v0.31.1  # the newest whose module builds: later ones embed a web UI the module lacks
am_dir="$cache/alertmanager-$ALERTMANAGER_VERSION"
if [ ! -x "$am_dir/amtool" ]; then
  log "building alertmanager and amtool $ALERTMANAGER_VERSION"
  start=$SECONDS
  tmp=$(mktemp -d "$cache/gobin.XXXXXX")
  GOBIN="$tmp" go install "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION" \
    "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION" >&2
  rm -rf "$am_dir" && mv "$tmp" "$am_dir"
  log "built in $((SECONDS - start))s"
fi

# --- compose-check: Docker Compose v2's own loader (compose-go) -----------------------------------------
cc_src="$repo/tools/compose-check"
cc_dir="$cache/compose-check-$(key "$cc_src/go.mod" "$cc_src/go.sum" "$cc_src/main.go")"
if [ ! -x "$cc_dir/compose-check" ]; then
  log "building compose-check"
  mkdir -p "$cc_dir"
  (cd "$cc_src" && GOFLAGS=-mod=readonly go build -trimpath -o "$cc_dir/compose-check" . >&2)
fi

# --- Fleet collector: agent + gateway tiers, their own ocb manifest and core version -------------------------
# collector/fleet/builder-config.yaml pins 0.159.0 (the newest version at which load_balancing, tail_sampling and
# span_metrics are all served; README "Fleet"). Same recipe as otelcol-qt above, its own builder version.
fleet_manifest="$repo/collector/fleet/builder-config.yaml"
fleet_version=$(sed -n 's/^  version: *//p' "$fleet_manifest" | head -1)
fleet_dir="$cache/otelcol-qt-fleet-$(key "$fleet_manifest")"
if [ ! -x "$fleet_dir/otelcol-qt-fleet" ]; then
  fleet_builder="$cache/bin/builder-v$fleet_version"
  if [ ! -x "$fleet_builder" ]; then
    log "installing the collector builder v$fleet_version"
    tmp_gobin=$(mktemp -d "$cache/gobin.XXXXXX")
    GOBIN="$tmp_gobin" go install "go.opentelemetry.io/collector/cmd/builder@v$fleet_version" >&2
    mv "$tmp_gobin/builder" "$fleet_builder" && rmdir "$tmp_gobin"
  fi
  log "building otelcol-qt-fleet v$fleet_version (a few minutes the first time)"
  start=$SECONDS
  work=$(mktemp -d "$cache/otelcol-fleet-build.XXXXXX")
  (cd "$work" && "$fleet_builder" --config="$fleet_manifest" >&2)
  rm -rf "$fleet_dir" && mkdir -p "$fleet_dir"
  mv "$work/otelcol-qt-fleet/otelcol-qt-fleet" "$fleet_dir/otelcol-qt-fleet" && rm -rf "$work"
  log "otelcol-qt-fleet built in $((SECONDS - start))s"
fi

echo "otelcol=$col_dir/otelcol-qt"
echo "tempo=$tempo_dir/tempo"
echo "prometheus=$prom_dir/prometheus"
echo "promtool=$prom_dir/promtool"
echo "alertmanager=$am_dir/alertmanager"
echo "amtool=$am_dir/amtool"
echo "compose_check=$cc_dir/compose-check"
echo "otelcol_fleet=$fleet_dir/otelcol-qt-fleet"
