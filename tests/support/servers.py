"""Where the server binaries are: QT_E2E_<NAME> variables (set by scripts/test.sh), else built on demand.

A missing binary is a failure with the build's own error, never a skip: a skipped end-to-end test proves
nothing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ("otelcol", "tempo", "prometheus", "promtool", "alertmanager", "amtool", "compose_check",
         "otelcol_fleet")


@functools.cache
def _built() -> dict[str, str]:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build-servers.sh")], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/build-servers.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def binary(name: str) -> str:
    """Absolute path of a built server binary (see scripts/build-servers.sh)."""
    assert name in NAMES, name
    path = os.environ.get(f"QT_E2E_{name.upper()}") or _built()[name]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{name}: {path} is not an executable; run scripts/build-servers.sh")
    return path


def debian_tool(name: str) -> str:
    """A tool from Debian's packages (promtool from 'prometheus'); scripts/test.sh installs them."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: apt-get install prometheus prometheus-alertmanager (scripts/test.sh does)")
    return path
