"""``python -m qt_telemetry demo|doctor``: the same as the ``qt-telemetry`` command."""

import sys

from qt_telemetry.cli import main

sys.exit(main())
