#!/usr/bin/env bash
# Build (once) the servers the tests run, from their published Go modules, into a cache outside the repo
# keyed by the manifests' content:
#   otelcol       the OpenTelemetry Collector distribution of collector/builder-config.yaml (ocb builder)
#   tempo         Grafana Tempo at the commit pinned by tempo/build/go.mod (wrapper module)
#   prometheus    Prometheus 3 as pinned by prometheus/build/go.mod (wrapper module) + promtool
#   alertmanager  Alertmanager + amtool (plain go install)
#   compose_check Docker Compose v2's loader (compose-go), to validate docker-compose.yml
#   otelcol_fleet the fleet distribution of collector/fleet/builder-config.yaml (agent and gateway tiers)
#   grafana       Grafana's server at the one version its Go module registry serves (HTTP API, no web UI)
# The versions equal the image tags in docker-compose.yml (tests/unit/test_stack_configs.py checks that),
# except Grafana: compose runs 13.x, which the registry refuses to serve (README "Versions").
# Debian's prometheus 2.42 is older than those images where the tests care, so it is used only for its
# promtool checks (scripts/install-debian-packages.sh).
#
# Usage: build-servers.sh [target...]   (default: all of the above). The tests ask only for what the selected
# tests use (tests/support/servers.py). Prints a "name=<path>" line on stdout as each target is ready;
# progress goes to stderr: what is being built, how long it typically takes cold, a line a minute while Go
# compiles silently, and how long it took.
# Go's module and build caches for these builds live in the same cache dir (go/mod, go/build), and are deleted
# when the script ends (GBs that only a rebuild of a changed pin would use; QT_TELEMETRY_KEEP_GO_CACHES=1 keeps
# them): what stays is the binaries. Runs on the same cache dir take turns (flock). README "Tests" has the
# measured times and sizes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${QT_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qt-telemetry}
mkdir -p "$cache/bin"
if command -v flock >/dev/null; then  # one build at a time per cache: no half-built binaries, no shared go/ removed
  exec 9>"$cache/build.lock"
  flock -n 9 || { echo "build-servers: waiting for another build in $cache" >&2; flock 9; }
fi
export CGO_ENABLED=0
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"  # module files writable: `rm -rf` of the cache dir just works

all_targets=(otelcol tempo prometheus alertmanager compose_check grafana otelcol_fleet)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] ||
    { echo "build-servers: unknown target '$t' (${all_targets[*]})" >&2; exit 2; }
done
wanted() { [[ " ${targets[*]} " == *" $1 "* ]]; }

command -v go >/dev/null || { echo "build-servers: Go is required (https://go.dev/dl/)" >&2; exit 1; }

key() { cat "$@" | sha256sum | cut -c1-16; }
log() { echo "build-servers: $*" >&2; }

# timed LABEL TYPICAL_MINUTES COMMAND...: announce a build, report once a minute while it runs, time it.
# A failing command exits the script (set -e); the EXIT trap then names the build that failed.
building="" started=0 ticker=""
timed() {
  building=$1 started=$SECONDS
  log "building $1 (typically ~$2 min cold on 2 cores; Go prints nothing while it compiles)"
  (while sleep 60 && kill -0 $$ 2>/dev/null; do
     log "  ... still building $building, $(((SECONDS - started) / 60)) min so far"
   done) &
  ticker=$!
  shift 2
  "$@"
  kill "$ticker" && wait "$ticker" 2>/dev/null || true
  log "built $building in $((SECONDS - started))s"
  building="" ticker=""
}
finish() {
  local rc=$?
  [ -z "$ticker" ] || kill "$ticker" 2>/dev/null || true
  [ -z "$building" ] || log "building $building FAILED after $((SECONDS - started))s (exit $rc)"
  if [ -d "$cache/go" ]; then
    local sizes
    sizes="modules $(du -sh "$GOMODCACHE" 2>/dev/null | cut -f1)"
    sizes+=", build cache $(du -sh "$GOCACHE" 2>/dev/null | cut -f1)"
    if [ -n "${QT_TELEMETRY_KEEP_GO_CACHES:-}" ]; then
      log "Go caches kept in $cache/go: $sizes"
    else
      log "deleting Go caches in $cache/go: $sizes (QT_TELEMETRY_KEEP_GO_CACHES=1 keeps them)"
      rm -rf "$cache/go"
    fi
  fi
}
trap finish EXIT

# A wrapper module (go.mod + go.sum + tools.go) that requires a server at a pinned version and repeats its
# replace directives; go.sum pins every dependency, so the checksum database is not consulted for them.
wrapper_build() {  # src_dir out_dir package...
  local src=$1 out=$2 work; shift 2
  work=$(mktemp -d "$cache/build.XXXXXX")
  cp "$src/go.mod" "$src/go.sum" "$src/tools.go" "$work/"
  (cd "$work" && GONOSUMDB=github.com/grafana/tempo GOFLAGS="$GOFLAGS -mod=readonly" \
     go build -trimpath -ldflags="-s -w" -o "$work/bin/" "$@" >&2)
  rm -rf "$out" && mv "$work/bin" "$out" && rm -rf "$work"
}

# --- OpenTelemetry Collector (ocb builder at the manifest's core version) ------------------------------
manifest="$repo/collector/builder-config.yaml"
col_version=$(sed -n 's/^  version: *//p' "$manifest" | head -1)
col_dir="$cache/otelcol-qt-$(key "$manifest")"
build_collector() {  # manifest version out_dir name: the ocb builder at the manifest's core version
  local manifest=$1 version=$2 out=$3 name=$4 builder work tmp_gobin
  builder="$cache/bin/builder-v$version"
  if [ ! -x "$builder" ]; then
    log "installing the collector builder v$version"
    tmp_gobin=$(mktemp -d "$cache/gobin.XXXXXX")
    GOBIN="$tmp_gobin" go install "go.opentelemetry.io/collector/cmd/builder@v$version" >&2
    mv "$tmp_gobin/builder" "$builder" && rmdir "$tmp_gobin"
  fi
  work=$(mktemp -d "$cache/otelcol-build.XXXXXX")
  (cd "$work" && "$builder" --config="$manifest" >&2)
  rm -rf "$out" && mkdir -p "$out"
  mv "$work/$name/$name" "$out/$name" && rm -rf "$work"
}
if wanted otelcol; then
  [ -x "$col_dir/otelcol-qt" ] || timed "otelcol-qt v$col_version" 5 build_collector "$manifest" "$col_version" "$col_dir" otelcol-qt
  echo "otelcol=$col_dir/otelcol-qt"
fi

# --- Tempo and Prometheus (wrapper modules) -------------------------------------------------------------
tempo_src="$repo/tempo/build"
tempo_dir="$cache/tempo-$(key "$tempo_src/go.mod" "$tempo_src/go.sum")"
if wanted tempo; then
  [ -x "$tempo_dir/tempo" ] ||
    timed "tempo" 6 wrapper_build "$tempo_src" "$tempo_dir" github.com/grafana/tempo/cmd/tempo
  echo "tempo=$tempo_dir/tempo"
fi

prom_src="$repo/prometheus/build"
prom_dir="$cache/prometheus-$(key "$prom_src/go.mod" "$prom_src/go.sum")"
if wanted prometheus; then
  [ -x "$prom_dir/promtool" ] || timed "prometheus + promtool" 6 wrapper_build "$prom_src" "$prom_dir" \
    github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
  echo "prometheus=$prom_dir/prometheus"
  echo "promtool=$prom_dir/promtool"
fi

# --- Alertmanager (no replace directives: plain go install) ---------------------------------------------
ALERTMANAGER_VERSION=v0.31.1  # the newest whose module builds: later ones embed a web UI the module lacks
am_dir="$cache/alertmanager-$ALERTMANAGER_VERSION"
build_alertmanager() {
  local tmp
  tmp=$(mktemp -d "$cache/gobin.XXXXXX")
  GOBIN="$tmp" go install "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION" \
    "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION" >&2
  rm -rf "$am_dir" && mv "$tmp" "$am_dir"
}
if wanted alertmanager; then
  [ -x "$am_dir/amtool" ] || timed "alertmanager + amtool $ALERTMANAGER_VERSION" 2 build_alertmanager
  echo "alertmanager=$am_dir/alertmanager"
  echo "amtool=$am_dir/amtool"
fi

# --- compose-check: Docker Compose v2's own loader (compose-go) -----------------------------------------
cc_src="$repo/tools/compose-check"
cc_dir="$cache/compose-check-$(key "$cc_src/go.mod" "$cc_src/go.sum" "$cc_src/main.go")"
build_compose_check() {
  mkdir -p "$cc_dir"
  (cd "$cc_src" && GOFLAGS="$GOFLAGS -mod=readonly" go build -trimpath -o "$cc_dir/compose-check" . >&2)
}
if wanted compose_check; then
  [ -x "$cc_dir/compose-check" ] || timed "compose-check" 1 build_compose_check
  echo "compose_check=$cc_dir/compose-check"
fi

# --- Grafana (end-to-end tests only; compose runs the newer image) ---------------------------------------
# The one Grafana server version the module registry serves (v11-v13 are refused): a main-branch commit of
# 9 June 2023, between 10.0 and 10.1 (its package.json says 10.0.0-preview). The module has conf/ and public/
# (HTML and email templates, every core plugin's plugin.json) but no public/build frontend bundle: the server
# answers its HTTP API, there is no browser UI. pkg/server/wire_gen.go is gitignored upstream, so it is
# generated here, with wire v0.7.0 (the v0.5.0 Grafana pins panics on current Go). Its sqlite needs cgo.
# Output: $gf_dir/grafana, and $gf_dir/home (conf/ + public/) to pass as --homepath.
GRAFANA_MODULE_VERSION=v1.9.2-0.20230609164553-81d85ce8028d
WIRE_VERSION=v0.7.0
build_grafana() {
  local work src version
  if ! command -v "${CC:-gcc}" >/dev/null; then
    log "Grafana's sqlite needs cgo: install a C compiler (apt-get install gcc)"
    return 1
  fi
  work=$(mktemp -d "$cache/grafana-build.XXXXXX")
  src=$(cd "$work" && go mod download -json "github.com/grafana/grafana@$GRAFANA_MODULE_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  cp -R "$src" "$work/src" && chmod -R u+w "$work/src"
  (cd "$work/src" && go run "github.com/google/wire/cmd/wire@$WIRE_VERSION" gen -tags oss ./pkg/server >&2)
  version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$work/src/package.json")
  (cd "$work/src" && CGO_ENABLED=1 GOFLAGS="$GOFLAGS -mod=readonly" go build -tags oss -trimpath \
     -ldflags="-s -w -X main.version=$version -X main.commit=${GRAFANA_MODULE_VERSION##*-}" \
     -o "$work/out/grafana" ./pkg/cmd/grafana >&2)
  mkdir -p "$work/out/home" && cp -R "$work/src/conf" "$work/src/public" "$work/out/home/"
  rm -rf "$gf_dir" && mv "$work/out" "$gf_dir" && rm -rf "$work"
}
# keyed by the version and the recipe itself
gf_key=$(printf '%s\n' "$GRAFANA_MODULE_VERSION" "$WIRE_VERSION" "$(declare -f build_grafana)" | sha256sum | cut -c1-16)
gf_dir="$cache/grafana-$gf_key"
if wanted grafana; then
  [ -x "$gf_dir/grafana" ] || timed "grafana (module $GRAFANA_MODULE_VERSION)" 12 build_grafana
  echo "grafana=$gf_dir/grafana"
fi

# --- Fleet collector: agent + gateway tiers, their own ocb manifest and core version -------------------------
# collector/fleet/builder-config.yaml pins 0.159.0 (the newest version at which load_balancing, tail_sampling and
# span_metrics are all served; README "Fleet"). Same recipe as otelcol-qt above, its own builder version.
fleet_manifest="$repo/collector/fleet/builder-config.yaml"
fleet_version=$(sed -n 's/^  version: *//p' "$fleet_manifest" | head -1)
fleet_dir="$cache/otelcol-qt-fleet-$(key "$fleet_manifest")"
if wanted otelcol_fleet; then
  [ -x "$fleet_dir/otelcol-qt-fleet" ] ||
    timed "otelcol-qt-fleet v$fleet_version" 6 build_collector "$fleet_manifest" "$fleet_version" "$fleet_dir" otelcol-qt-fleet
  echo "otelcol_fleet=$fleet_dir/otelcol-qt-fleet"
fi
