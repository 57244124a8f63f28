import sys

from qt_telemetry.cli import main

sys.exit(main())
