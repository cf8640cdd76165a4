"""Logging set-up for every ``main()``: JSON lines in production, plain text in development.

Records are formatted and written on a writer thread, not by the code that logs: the service
logs one record per decision, and formatting plus writing it (~45 us) would otherwise be paid by
every request.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
from collections import deque
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


#: The longest a WARNING+ record waits for the records queued before it to be written.
FLUSH_TIMEOUT_S = 5.0
#: How long an INFO record may wait in the queue before the writer thread writes it.
DRAIN_INTERVAL_S = 0.05


class BackgroundHandler(logging.Handler):
    """Queues records for ``target``, which formats and writes them on a writer thread.

    The writer wakes every ``interval_s`` and writes everything queued since, instead of waking
    for each record. Under a stream of decisions a wake-up per record cost a thread switch and
    the GIL while the serving thread was answering the next request: with sequential requests
    back to back, the decision log added 150-300 us to each of them, measured on 2 cores. Records
    travel as they are, unformatted, so the formatter sees the same record (``extra`` fields,
    ``exc_info``) as a direct handler would; their arguments are formatted later, so callers
    must not mutate what they log (ours pass fresh values). A record at WARNING or above is
    written before the logging call returns (after those queued before it): a warning or error
    just before an exit, or one that a test reads back, is never left in the queue. ``close``
    (also run at exit) writes out the rest.
    """

    def __init__(self, target: logging.Handler, interval_s: float = DRAIN_INTERVAL_S) -> None:
        super().__init__()
        self.target = target
        self._interval_s = interval_s
        # deque.append and popleft are atomic: no lock on the caller's path
        self._queue: deque[logging.LogRecord | threading.Event] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="tierwise-log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed:  # at exit, after close: written here, not left in a dead queue
            self.target.handle(record)
            return
        self._queue.append(record)
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        """Wait until the writer has written every record queued so far."""
        if not self._writer.is_alive() or threading.current_thread() is self._writer:
            return  # a handler logging from the writer thread must not wait for itself
        written = threading.Event()
        self._queue.append(written)
        self._wake.set()
        written.wait(timeout=FLUSH_TIMEOUT_S)

    def close(self) -> None:
        """Write out the queued records, stop the writer thread, and close the target."""
        if self._closed:
            return
        self._closed = True  # the writer stops after its next drain
        atexit.unregister(self.close)
        self._wake.set()
        if threading.current_thread() is not self._writer:
            self._writer.join(timeout=FLUSH_TIMEOUT_S)
        self.target.close()
        super().close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            # cleared before the drain: a record queued after this point sets it again, and one
            # queued before is written by this drain
            self._wake.clear()
            self._drain()
            if self._closed:
                self._drain()
                return

    def _drain(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, threading.Event):
                item.set()
            else:
                self.target.handle(item)


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
