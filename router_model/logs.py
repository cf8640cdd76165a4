"""Logging set-up for every ``main()``: JSON lines in production, plain text in development.

Records are formatted and written on a listener thread, not by the code that logs: the service
logs one record per decision, and formatting plus writing it (~45 us) would otherwise be paid by
every request.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; fields passed in ``extra=`` become keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class BackgroundHandler(QueueHandler):
    """Queues records for ``target``, which formats and writes them on a listener thread.

    Records travel as they are, unformatted: the queue is in-process, so nothing needs pickling,
    and the formatter sees the same record (``extra`` fields, ``exc_info``) as a direct handler
    would. Their arguments are formatted later, so callers must not mutate what they log (ours
    pass fresh values). A record at WARNING or above is written before the logging call returns
    (after those queued before it): a warning or error just before an exit, or one that a test
    reads back, is never left in the queue. ``close`` (also run at exit) writes out the rest.
    """

    def __init__(self, target: logging.Handler) -> None:
        # SimpleQueue: a put is one C call, with no lock or condition variable in Python
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(records)
        self._listener: _Listener | None = _Listener(records, target)
        self._listener.start()
        atexit.register(self.close)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # QueueHandler.prepare formats the message here, on the caller's thread, and drops
        # exc_info so the record can be pickled; neither is wanted for an in-process queue
        return record

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        """Wait until the listener has written every record queued so far."""
        listener = self._listener
        if listener is None or listener.on_its_thread():
            return  # a handler logging from the listener thread must not wait for itself
        written = threading.Event()
        self.queue.put_nowait(written)
        written.wait(timeout=FLUSH_TIMEOUT_S)

    def close(self) -> None:
        """Write out the queued records, stop the listener thread, and close the target."""
        listener, self._listener = self._listener, None
        if listener is not None:
            atexit.unregister(self.close)
            listener.stop()
            for target in listener.handlers:
                target.close()
        super().close()


#: The longest a WARNING+ record waits for the records queued before it to be written.
FLUSH_TIMEOUT_S = 5.0


class _Listener(QueueListener):
    """A ``QueueListener`` that answers flush markers (events it sets) between records."""

    def __init__(self, records: queue.SimpleQueue[Any], target: logging.Handler) -> None:
        super().__init__(records, target)
        self._here = threading.local()

    def handle(self, record: logging.LogRecord | threading.Event) -> None:
        if isinstance(record, threading.Event):
            record.set()
            return
        self._here.active = True
        try:
            super().handle(record)
        finally:
            self._here.active = False

    def on_its_thread(self) -> bool:
        """Whether the caller is the listener thread, handling a record."""
        return bool(getattr(self._here, "active", False))


def configure_logging(
    fmt: str = "text", level: str = "INFO", stream: IO[str] | None = None
) -> None:
    """Configure the root logger once (idempotent: replaces earlier handlers).

    Records go to ``stream``, standard error by default. Records no longer carry their caller
    (``funcName``, ``lineno``), thread or process: neither format shows them.
    """
    target = logging.StreamHandler(stream)
    if fmt == "json":
        target.setFormatter(JsonFormatter())
    else:
        target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # what no format here prints is not gathered per record either (the logging HOWTO's
    # optimisations): caller, thread and process lookups are ~1/4 of a record's ~45 us
    logging._srcfile = None  # the HOWTO's own switch for the caller lookup
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, BackgroundHandler):
            old.close()
    root.handlers[:] = [BackgroundHandler(target)]
    root.setLevel(level)
