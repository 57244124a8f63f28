"""Third-party integrations (ccxt, Flask, freqtrade); their public faces are qt_telemetry.ccxt, .flask, ..."""
