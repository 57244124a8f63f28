"""The exporter side: records in, OTLP (or Prometheus /metrics) out."""
