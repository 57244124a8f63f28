"""Shared fixtures. ``qt_capture`` (in-memory spans and metrics) comes from qt_telemetry's pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qt_telemetry.testing import Capture, reset_globals
from tests.support import servers


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or install the servers the selected tests declare (``@pytest.mark.servers``) before the first
    test starts, outside any test's timeout and output capture: the progress shows on the terminal."""
    if session.config.option.collectonly:
        return
    servers.provide(servers.declared(session.items))


@pytest.fixture
def cap(qt_capture: Capture) -> Capture:
    """Short alias: the in-memory capture of this test's telemetry."""
    return qt_capture


@pytest.fixture
def clean_globals() -> Iterator[None]:
    """For tests that call qt_telemetry.init() themselves: a clean slate before and after."""
    reset_globals()
    yield
    reset_globals()
