"""The server binaries and Debian tools the tests run, built or installed only when selected tests use them.

Tests declare what they run with ``@pytest.mark.servers("promtool", ...)`` (the e2e conftest declares the
stack's servers for every test that uses the ``stack`` fixture, and Grafana for the ``grafana`` fixture).
After collection, tests/conftest.py calls :func:`provide` with what the *selected* tests declared: Go builds
by scripts/build-servers.sh (cached in ~/.cache/qt-telemetry), Debian packages by
scripts/install-debian-packages.sh, with their progress on the terminal before the first test starts. So
`tests/unit -k 'not stack_configs'` needs neither Go nor apt, and the whole suite gets everything.

``QT_E2E_<NAME>`` (e.g. ``QT_E2E_OTELCOL``) points at a binary of your own instead. A binary that was not
declared is built on first use, inside the test. A missing binary is a failure with the build's own error,
never a skip: a skipped end-to-end test proves nothing.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: binary -> the scripts/build-servers.sh target that builds it
GO_BUILDS = {
    "otelcol": "otelcol", "tempo": "tempo", "prometheus": "prometheus", "promtool": "prometheus",
    "alertmanager": "alertmanager", "amtool": "alertmanager", "compose_check": "compose_check",
    "grafana": "grafana", "otelcol_fleet": "otelcol_fleet",
}
#: Debian tool -> its package (installed by scripts/install-debian-packages.sh when missing)
DEBIAN = {"debian:promtool": "prometheus"}
#: what a Go target needs besides Go: Grafana's sqlite is cgo
BUILD_NEEDS = {"grafana": {"gcc": "gcc"}}
NAMES = tuple(GO_BUILDS) + tuple(DEBIAN)

_paths: dict[str, str] = {}
_failures: dict[str, str] = {}


def _override(name: str) -> str | None:
    return os.environ.get(f"QT_E2E_{name.upper()}")


def _run_streaming(argv: list[str]) -> tuple[int, str, str]:
    """Run with stderr shown live (on the terminal when pytest is not capturing) and its tail kept."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    with tempfile.TemporaryFile("w+") as out:
        with subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                tail.append(line)
        out.seek(0)
        return proc.returncode, out.read(), "".join(tail)


def declared(items: Iterable[Any]) -> set[str]:
    """What these pytest items declare with ``@pytest.mark.servers(...)``."""
    return {name for item in items for mark in item.iter_markers("servers") for name in mark.args}


def provide(names: Iterable[str]) -> None:
    """Build or install what ``names`` need (nothing if they are all there). Failures are kept, not raised:
    each test that uses a missing binary fails with the build's error, the others still run."""
    wanted = set(names)
    unknown = wanted - set(NAMES)
    assert not unknown, f"unknown servers {sorted(unknown)}; known: {NAMES}"
    tools = {n for n in wanted & set(DEBIAN) if shutil.which(n.split(":", 1)[1]) is None and n not in _failures}
    targets = sorted({GO_BUILDS[n] for n in wanted & set(GO_BUILDS)
                      if _override(n) is None and n not in _paths and n not in _failures})
    packages = {DEBIAN[n] for n in tools} | {package for target in targets
                                              for tool, package in BUILD_NEEDS.get(target, {}).items()
                                              if shutil.which(tool) is None}
    if packages:
        install = REPO / "scripts" / "install-debian-packages.sh"
        code, _, tail = _run_streaming(["bash", str(install), *sorted(packages)])
        if code != 0:  # the Go builds still run; one that needed a package fails with its own message
            _failures.update({n: f"scripts/install-debian-packages.sh failed ({code}):\n{tail}" for n in tools})
    if targets:
        code, out, tail = _run_streaming(["bash", str(REPO / "scripts" / "build-servers.sh"), *targets])
        _paths.update(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        if code != 0:
            _failures.update({n: f"scripts/build-servers.sh {' '.join(targets)} failed ({code}):\n{tail}"
                              for n, target in GO_BUILDS.items() if target in targets and n not in _paths})


def binary(name: str) -> str:
    """Absolute path of a built server binary (see scripts/build-servers.sh)."""
    assert name in GO_BUILDS, name
    path = _override(name) or _paths.get(name)
    if path is None:
        if name not in _failures:
            provide([name])  # not declared by the test: built now, inside it
        if name in _failures:
            raise RuntimeError(f"{name} could not be built: {_failures[name]}")
        path = _paths[name]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{name}: {path} is not an executable; run scripts/build-servers.sh")
    return path


def debian_tool(name: str) -> str:
    """A tool from Debian's packages (promtool from 'prometheus'), installed when a selected test uses it."""
    if shutil.which(name) is None and f"debian:{name}" not in _failures:
        provide([f"debian:{name}"])
    path = shutil.which(name)
    if path is None:
        why = _failures.get(f"debian:{name}", f"apt-get install {DEBIAN[f'debian:{name}']}")
        raise RuntimeError(f"{name} not found: {why}")
    return path
