"""``python -m qt_telemetry._engine.exporter``: the exporter process (started by ``init()``, never by hand)."""

import sys

from qt_telemetry._engine.exporter.process import main

main(sys.argv[1:])
