"""The package type-checks under mypy --strict, and decorators keep signatures for type checkers."""

from __future__ import annotations

import subprocess
import sys

from tests.support.servers import REPO


def test_package_and_signature_fixture_pass_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "src/qt_telemetry", "tests/typing/signatures.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
