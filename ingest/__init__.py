"""Ingest: broker to storage sinks, with validation, dead letters and dedupe."""
