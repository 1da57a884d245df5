"""Logging off the event loop, cheaply.

Log records are queued on the event loop (no I/O there: a slow or full stderr pipe must never
stall every call in flight) and a writer thread formats them and writes whatever is queued in
one ``write`` and one flush. With one line per call, that is one system call per burst of
calls rather than one per line. The records skip what this service never prints (caller's
file and line, thread and process names): the logging HOWTO's "Optimization" switches.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

from .interceptors import request_id_var

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()  # the request id lives in the caller's context
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


class LogWriter:
    """The thread that formats queued records and writes them in batches."""

    _STOP = object()

    def __init__(self, records: queue.SimpleQueue[object], stream: TextIO, formatter: logging.Formatter) -> None:
        self._records = records
        self._stream = stream
        self._formatter = formatter
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Writes what is queued, then ends the thread."""
        self._records.put(self._STOP)
        self._thread.join()

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record)
        except Exception:  # noqa: BLE001 - a bad format call must not kill the writer
            return f"(unformattable log record from {record.name}: {record.msg!r})"

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._records.get()]
            while True:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for item in batch:
                if item is self._STOP:
                    stopping = True
                elif isinstance(item, logging.LogRecord):
                    lines.append(self._format(item))
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
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    enqueue = _Enqueue(records)
    enqueue.addFilter(_RequestIdFilter())
    logging.basicConfig(level=level, handlers=[enqueue], force=True)
    writer = LogWriter(records, stream or sys.stderr, logging.Formatter(FORMAT))
    writer.start()
    return writer
