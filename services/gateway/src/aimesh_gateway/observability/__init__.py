"""Metrics, the request context (ids, access log) and tracing."""
