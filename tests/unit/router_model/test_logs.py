"""The background log handler: records written off the caller's thread, unchanged and in order."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

from router_model.logs import BackgroundHandler, JsonFormatter


class SlowList(logging.Handler):
    """A target that takes a while per record and remembers what it wrote, and on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)  # a slow disk: the caller must not wait for INFO records
        self.written.append((record.getMessage(), threading.current_thread().name))


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_warning_is_written_with_everything_queued_before_it() -> None:
    target = SlowList()
    handler = BackgroundHandler(target)
    logger = _logger(handler, "tierwise.test.flush")
    try:
        for i in range(3):
            logger.info("decision %d", i)
        logger.warning("store down")
        # the warning call returned: it and the records before it are written, in order
        assert [m for m, _ in target.written] == [
            "decision 0", "decision 1", "decision 2", "store down"]
        assert {t for _, t in target.written} != {threading.current_thread().name}
    finally:
        handler.close()


def test_info_records_are_written_within_the_drain_interval() -> None:
    target = SlowList()
    handler = BackgroundHandler(target, interval_s=0.02)
    logger = _logger(handler, "tierwise.test.drain")
    try:
        started = time.monotonic()
        for i in range(5):
            logger.info("decision %d", i)
        assert time.monotonic() - started < 0.05  # the caller never waits for the slow target
        deadline = time.monotonic() + 5
        while len(target.written) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [m for m, _ in target.written] == [f"decision {i}" for i in range(5)]
        assert {t for _, t in target.written} == {"tierwise-log-writer"}
    finally:
        handler.close()


def test_close_writes_out_the_queue() -> None:
    target = SlowList()
    handler = BackgroundHandler(target)
    logger = _logger(handler, "tierwise.test.close")
    logger.info("a")
    logger.info("b")
    handler.close()
    assert [m for m, _ in target.written] == ["a", "b"]


def test_json_record_keeps_extra_fields_and_the_traceback() -> None:
    out = io.StringIO()
    target = logging.StreamHandler(out)
    target.setFormatter(JsonFormatter())
    handler = BackgroundHandler(target)
    logger = _logger(handler, "tierwise.test.json")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed %s", "x", extra={"decision_id": "d1", "tier": "strong"})
    handler.close()
    doc = json.loads(out.getvalue())
    assert (doc["msg"], doc["level"], doc["decision_id"], doc["tier"]) == (
        "failed x", "ERROR", "d1", "strong")
    assert "ValueError: boom" in doc["exc"]
