"""JSON logs, one object per line, carrying the request id and the W3C trace context of the work being done.

The trace context (https://www.w3.org/TR/trace-context/) is what lets one reservation be followed across
processes with one grep for its `trace_id`: the gateway starts it (or continues the client's `traceparent`), every
service continues it from the `traceparent` header, the event store writes it into the NATS message headers of
every event it appends, and the projection runners continue it when they apply that event.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys
from dataclasses import dataclass
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """One span of a trace: the trace it belongs to, its own id, and whether the caller samples it."""

    trace_id: str
    span_id: str
    sampled: bool = True
    parent_id: str | None = None

    @classmethod
    def new(cls, trace_id: str | None = None) -> TraceContext:
        """A root span; `trace_id` (32 lowercase hex, not all zeros) joins an existing trace instead."""
        if trace_id is None or not _TRACE_ID.match(trace_id) or trace_id == _ZERO_TRACE:
            trace_id = secrets.token_hex(16)
        return cls(trace_id, secrets.token_hex(8))

    def child(self) -> TraceContext:
        """The span of the next hop: same trace, its own id, this span as its parent."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.sampled, self.span_id)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """The caller's span from a `traceparent` header, or None when it is absent or malformed (then the receiver
    starts a new trace, as the specification says). Versions above 00 are read as 00 (forward compatibility)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _TRACEPARENT.match(text.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


trace_var: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("trace", default=None)


def trace_headers() -> dict[str, str]:
    """What an outgoing call or message carries so the receiver continues this trace ({} outside one)."""
    context = trace_var.get()
    return {TRACEPARENT: context.traceparent} if context else {}


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            doc["request_id"] = request_id
        trace = trace_var.get()
        if trace is not None:
            doc["trace_id"], doc["span_id"] = trace.trace_id, trace.span_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints paths with ids, never bodies; keep it but through our formatter.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
