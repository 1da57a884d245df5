"""Logging off the event loop, cheaply.

Log records are queued on the event loop (no I/O there: a slow or full stderr pipe must never
stall every call in flight) and a writer thread, waking every 50 ms, formats them and writes
whatever is queued in one ``write`` and one flush: with one line per call, neither a system call
nor a thread wake-up per call. The records skip what this service never prints (caller's
file and line, thread and process names): the logging HOWTO's "Optimization" switches.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

from opentelemetry import trace

from .domain.call_context import request_id_var
from .redaction import redact

# "[request id trace=<trace id>]": the trace id (of the call's server span, the caller's trace
# when it sent one) ties a line to the trace; left out outside a traced call.
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s%(trace)s] %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()  # the request id lives in the caller's context
        context = trace.get_current_span().get_span_context()
        record.trace = f" trace={context.trace_id:032x}" if context.is_valid else ""
        return True


_IMMUTABLE = (str, int, float, bool, type(None))


class _Enqueue(logging.handlers.QueueHandler):
    """Queues the record for the writer thread, which formats it (``QueueHandler.prepare``
    would format and copy every record on the event loop). A message whose arguments could
    change before the writer gets to them (anything but plain strings and numbers, as some
    libraries pass) is rendered here."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        args = record.args
        if args and not (isinstance(args, tuple) and all(isinstance(a, _IMMUTABLE) for a in args)):
            record.msg, record.args = record.getMessage(), None
        return record


# Control characters a caller could use to forge or hide log lines (newlines, carriage
# returns, escape sequences, Unicode line separators), shown escaped instead.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if code != 0x09}
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_control(text: str) -> str:
    """``text`` on one line: every control character but tab written as an escape."""
    return text.translate(_CONTROL)


class SafeFormatter(logging.Formatter):
    """One record, one line: the message (with every value a caller supplied, such as a model
    name or a request id) has its control characters escaped, so no input can forge a log line;
    and every registered secret is redacted from the whole output, traceback included."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        return escape_control(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class LogWriter:
    """The thread that formats queued records and writes them, every ``FLUSH_INTERVAL_S``.

    It polls instead of waiting on the queue: a blocked ``get`` would wake the thread (and
    make it compete for the GIL with the event loop) once per log line, that is once per
    call. Polling costs 20 wake-ups a second, whatever the load. ``stop`` writes what is
    left; a killed process loses at most the last interval's lines."""

    FLUSH_INTERVAL_S = 0.05

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], stream: TextIO, formatter: logging.Formatter) -> None:
        self._records = records
        self._stream = stream
        self._formatter = formatter
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Writes what is queued, then ends the thread."""
        self._stopping.set()
        self._thread.join()

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record)
        except Exception:  # noqa: BLE001 - a bad format call must not kill the writer
            return f"(unformattable log record from {record.name}: {record.msg!r})"

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(self.FLUSH_INTERVAL_S)
            self._write_queued()
            if stopping:
                return

    def _write_queued(self) -> None:
        lines = []
        while True:
            try:
                lines.append(self._format(self._records.get_nowait()))
            except queue.Empty:
                break
        if lines:
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed or broken: nothing left to tell
                pass


def configure_logging(level: str, stream: TextIO | None = None) -> LogWriter:
    """Routes every logger through the queue to a started :class:`LogWriter` on ``stream``
    (stderr by default); call its ``stop`` at exit to flush."""
    logging._srcfile = None  # no caller file/line lookup per record (HOWTO "Optimization")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = _Enqueue(records)
    enqueue.addFilter(_RequestIdFilter())
    logging.basicConfig(level=level, handlers=[enqueue], force=True)
    writer = LogWriter(records, stream or sys.stderr, SafeFormatter(FORMAT))
    writer.start()
    return writer
