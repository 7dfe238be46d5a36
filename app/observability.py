"""Metrics and structured logs. The core stays free of both: the request middleware,
the job runner and scrape-time collectors read what happened and record it."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["JsonFormatter", "Metrics", "configure_logging"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the service exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "broker_http_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=registry,
        )
        self.http_latency = Histogram(
            "broker_http_request_duration_seconds", "HTTP request latency",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.allocations = Counter(
            "broker_allocations", "Allocation requests by outcome", ["outcome"], registry=registry,
        )
        self.allocation_latency = Histogram(
            "broker_allocation_duration_seconds", "Allocation latency",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed via `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
