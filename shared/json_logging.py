"""JSON log lines on stdout, one object per line, with the service's name in each, and
the trace and span ids of the span the line was written in."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from shared.tracing import TraceIdsOnLogRecords


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp="time",
        )
    )
    # trace_id / span_id of the current span, when there is one
    handler.addFilter(TraceIdsOnLogRecords())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka reports every rebalance and metadata refresh at INFO.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
