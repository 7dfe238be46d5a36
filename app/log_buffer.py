"""BufferedStreamHandler: log lines written in batches rather than one write each.

Under load the service logs one line per request. Written one by one, each line is
a system call (and a chance for the store thread to take the GIL): about a sixth of
an allocation's CPU in `make bench`. Here formatted lines wait in memory and go out
together: at the latest `interval` seconds after they were logged, as soon as
`capacity` lines wait, and at once when a WARNING or worse arrives (so problems are
never held back, and the lines before them come out first, in order). A crash can
lose at most `interval` seconds of INFO lines; a normal exit flushes everything
(`logging.shutdown` flushes and closes every handler), and so does a server's shutdown
(`write_through`: uvicorn ends a SIGTERMed process by re-raising the signal, which runs
no exit hooks); a forked child starts its own flusher. Lines are never split, and no
write is larger than a pipe writes atomically unless one line alone is.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from select import PIPE_BUF
from typing import TextIO

__all__ = ["BufferedStreamHandler"]


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches (module docstring)."""

    def __init__(
        self, stream: TextIO, *, interval: float = 0.2, capacity: int = 512,
        flush_level: int = logging.WARNING,
    ) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._capacity = capacity
        self._flush_level = flush_level
        self._interval = interval
        self._closing = threading.Event()
        self._flusher = self._start_flusher()
        handler = weakref.ref(self)  # the fork hook must not keep a retired handler alive
        os.register_at_fork(after_in_child=lambda: _continue_in_child(handler))

    def _start_flusher(self) -> threading.Thread:
        flusher = threading.Thread(
            target=self._flush_every_interval, name="log-flusher", daemon=True)
        flusher.start()
        return flusher

    def emit(self, record: logging.LogRecord) -> None:
        """Called by `handle` with the handler's lock held."""
        try:
            self._lines.append(self.format(record))
            if (record.levelno >= self._flush_level or len(self._lines) >= self._capacity
                    or self._closing.is_set()):  # once closing, nothing would write it later
                self._write_out()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_out()

    def write_through(self) -> None:
        """Write what waits now and every later line at once (the flusher stops): for
        a shutdown, whose last lines must not wait for a flusher the process may not
        live to run."""
        self._closing.set()
        self.flush()

    def close(self) -> None:
        """Stop the flusher (it ends within `interval`; not joined, as `logging.shutdown`
        calls this holding the lock the flusher may be waiting for) and write the rest."""
        self._closing.set()
        try:
            self.flush()
        finally:
            super().close()

    def _write_out(self) -> None:
        """Whole lines, at most PIPE_BUF bytes per write where lines allow: several
        workers may share one pipe, and only writes that small are never interleaved.
        The lines leave the buffer first: if the stream fails they are dropped (as a
        plain StreamHandler drops its line), never written twice or kept growing."""
        lines, self._lines = self._lines, []
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line) + 1 if line.isascii() else 4 * len(line) + 1
            if chunk and size + length > PIPE_BUF:
                self._write_chunk(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        self._write_chunk(chunk)

    def _write_chunk(self, lines: list[str]) -> None:
        if lines:
            self.stream.write("\n".join(lines) + "\n")
        if hasattr(self.stream, "flush"):
            self.stream.flush()

    def _flush_every_interval(self) -> None:
        while not self._closing.wait(self._interval):
            try:
                self.flush()
            except Exception:  # a broken stream dropped those lines; the next
                continue  # interval tries again (it may have been a passing EAGAIN)


def _continue_in_child(ref: weakref.ref[BufferedStreamHandler]) -> None:
    """A forked child has no flusher thread and a copy of the parent's waiting lines
    (the parent writes those): start its own thread with an empty buffer."""
    handler = ref()
    if handler is not None and not handler._closing.is_set():
        handler._lines.clear()
        handler._flusher = handler._start_flusher()
