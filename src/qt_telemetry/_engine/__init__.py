"""The engine, in the two processes it runs in.

- ``recorder``: the trading process's side — span scopes, the OTel context, head sampling, records, the outbox.
  Nothing in it imports the exporter side.
- ``transport``: what crosses the process boundary — the record layout and wire format, the channel.
- ``exporter``: the exporter process (and the in-process engines that run the same conversion).

:mod:`qt_telemetry._setup` assembles them.
"""
