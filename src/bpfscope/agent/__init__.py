"""The agent: runs tools together in one process, keeps their counters in pinned maps, and exports
them to Prometheus (pull, /metrics) and OpenTelemetry (push, OTLP)."""
