"""BufferedStreamHandler: lines are batched, never lost, never reordered, and problems
are not held back."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from select import PIPE_BUF
from typing import Any, TextIO

import pytest

from app.log_buffer import BufferedStreamHandler
from app.observability import JsonFormatter, configure_logging


class RecordingStream(io.StringIO):
    """A text stream that remembers each write call separately."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _plain(stream: TextIO, **options: Any) -> BufferedStreamHandler:
    """A handler that writes bare messages."""
    handler = BufferedStreamHandler(stream, **options)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _log(handler: BufferedStreamHandler, message: str, level: int = logging.INFO) -> None:
    handler.handle(logging.makeLogRecord({"msg": message, "levelno": level}))


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def stream() -> RecordingStream:
    return RecordingStream()


@pytest.fixture
def logger(stream: RecordingStream) -> Iterator[tuple[logging.Logger, BufferedStreamHandler]]:
    handler = BufferedStreamHandler(stream, interval=3600, capacity=5)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"test.log_buffer.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)
    handler.close()


def test_info_lines_wait_and_go_out_in_one_write(
    logger: tuple[logging.Logger, BufferedStreamHandler], stream: RecordingStream
) -> None:
    log, handler = logger
    for n in range(3):
        log.info("line %d", n)
    assert stream.writes == []
    handler.flush()
    assert stream.writes == ["INFO line 0\nINFO line 1\nINFO line 2\n"]


def test_a_warning_is_written_at_once_after_the_lines_before_it(
    logger: tuple[logging.Logger, BufferedStreamHandler], stream: RecordingStream
) -> None:
    log, _ = logger
    log.info("before")
    log.warning("trouble")
    assert stream.getvalue() == "INFO before\nWARNING trouble\n"
    assert len(stream.writes) == 1


def test_a_full_buffer_is_written_without_waiting(
    logger: tuple[logging.Logger, BufferedStreamHandler], stream: RecordingStream
) -> None:
    log, _ = logger
    for n in range(12):
        log.info("%d", n)
    assert len(stream.writes) == 2  # capacity 5: two full batches out, two lines wait
    assert stream.getvalue().splitlines() == [f"INFO {n}" for n in range(10)]


def test_writes_stay_within_an_atomic_pipe_write(stream: RecordingStream) -> None:
    handler = _plain(stream, interval=3600, capacity=10_000)
    lines = [f"{n:04d} " + "x" * 295 for n in range(100)] + ["é" * 900, "y" * 9000]
    try:
        for line in lines:
            _log(handler, line)
        handler.flush()
    finally:
        handler.close()
    assert stream.getvalue().splitlines() == lines
    assert all(text.endswith("\n") for text in stream.writes)
    oversized = [text for text in stream.writes if len(text.encode()) > PIPE_BUF]
    assert oversized == ["y" * 9000 + "\n"]  # a line alone may be longer; nothing else
    assert len(stream.writes) < 20


def test_waiting_lines_are_written_within_the_interval(stream: RecordingStream) -> None:
    handler = _plain(stream, interval=0.02)
    try:
        _log(handler, "quiet")
        _wait_until(lambda: bool(stream.getvalue()))
        assert stream.getvalue() == "quiet\n"
    finally:
        handler.close()


def test_close_writes_what_waits_and_stops_the_flusher(stream: RecordingStream) -> None:
    handler = _plain(stream, interval=3600)
    _log(handler, "last words")
    handler.close()
    assert stream.getvalue() == "last words\n"
    handler._flusher.join(timeout=5)
    assert not handler._flusher.is_alive()
    _log(handler, "after close")
    assert stream.getvalue() == "last words\nafter close\n"  # written through, not kept


def test_a_forked_child_has_its_own_flusher_and_not_the_parents_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "forked.log"
    with path.open("w") as stream:
        # A long interval: the parent's flusher sleeps, so the fork cannot catch it
        # holding the file's lock.
        handler = _plain(stream, interval=3600)
        try:
            _log(handler, "parent")
            parents_flusher = handler._flusher
            pid = os.fork()
            if pid == 0:  # the child: check, log, write, leave without pytest's teardown
                ok = (handler._lines == [] and handler._flusher is not parents_flusher
                      and handler._flusher.is_alive())
                _log(handler, "child")
                handler.flush()
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            handler.flush()
        finally:
            handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_text().splitlines() == ["child", "parent"]


class BrokenStream(RecordingStream):
    """Fails every write whose text holds `poison`."""

    def __init__(self, poison: str) -> None:
        super().__init__()
        self.poison = poison

    def write(self, text: str) -> int:
        if self.poison in text:
            raise BrokenPipeError("the reader went away")
        return super().write(text)


def test_a_failing_write_drops_its_lines_once_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = BrokenStream(poison="bad")
    handler = _plain(stream, interval=0.02, capacity=10_000)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    try:
        first = [f"{n:03d} bad " + "x" * 290 for n in range(20)]  # > PIPE_BUF: 2 chunks
        for line in first:
            _log(handler, line)
        _log(handler, "w", logging.WARNING)
        assert len(reported) == 1 and handler._lines == []  # dropped, not kept growing
        _log(handler, "later")
        _wait_until(lambda: "later" in stream.getvalue())  # the flusher carries on
    finally:
        handler.close()
    assert stream.getvalue() == "later\n"  # nothing written twice, nothing out of order


def test_a_failing_format_is_reported_not_raised(
    stream: RecordingStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = BufferedStreamHandler(stream, interval=3600)
    handler.setFormatter(JsonFormatter())
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    try:
        handler.handle(logging.makeLogRecord({"msg": "%d", "args": ("not a number",)}))
        assert len(reported) == 1
    finally:
        handler.close()


def test_configuring_again_retires_the_previous_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        (first,) = root.handlers
        configure_logging("INFO")
        (second,) = root.handlers
        assert isinstance(first, BufferedStreamHandler) and second is not first
        first._flusher.join(timeout=5)
        assert not first._flusher.is_alive()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
