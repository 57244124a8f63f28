"""pytest plugin: the ``qt_capture`` fixture (see :mod:`qt_telemetry.testing`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qt_telemetry.testing import Capture, capture_telemetry


@pytest.fixture
def qt_capture() -> Iterator[Capture]:
    """In-memory spans and metrics for one test, with OTel and qt-telemetry globals reset around it."""
    with capture_telemetry() as cap:
        yield cap
