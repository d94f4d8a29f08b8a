"""Log room: catch a trial's warnings, log records and printed output, and keep them with the trial."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator

MAX_LOG_CHARS = 20_000


class TrialLog:
    """Everything the libraries said during one trial, repeated lines folded into one with a count."""

    def __init__(self) -> None:
        self.lines: Counter[str] = Counter()

    def add(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self.lines[line] += 1

    def text(self) -> str:
        out = "\n".join(line if n == 1 else f"{line}  [x{n}]" for line, n in self.lines.items())
        return out if len(out) <= MAX_LOG_CHARS else out[:MAX_LOG_CHARS] + "\n[log truncated]"


class _Handler(logging.Handler):
    def __init__(self, log: TrialLog):
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.add(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured(log: TrialLog) -> Iterator[TrialLog]:
    """Route warnings, logging and stdout/stderr (Python and C level) of the block into `log`."""
    handler = _Handler(log)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers, root.level = [handler], logging.INFO
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every repeat instead of hiding them, then fold them
        saved_fds = _redirect_fds(sink)
        saved_streams = sys.stdout, sys.stderr
        text_sink = io.StringIO()
        sys.stdout = sys.stderr = text_sink
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = saved_streams
            _restore_fds(saved_fds)
            root.handlers, root.level = saved_handlers, saved_level
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines() + text_sink.getvalue().splitlines():
                log.add(line)
            for w in caught:
                log.add(f"{w.category.__name__}: {w.message} ({os.path.basename(w.filename)}:{w.lineno})")


def _redirect_fds(sink: io.BufferedRandom) -> list[tuple[int, int]]:
    # C extensions (bitsandbytes, CUDA libraries) write to the file descriptors, not sys.stdout.
    saved = []
    for fd in (1, 2):
        try:
            sys.stdout.flush() if fd == 1 else sys.stderr.flush()
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
        except (OSError, ValueError):
            continue
    return saved


def _restore_fds(saved: list[tuple[int, int]]) -> None:
    for fd, copy in saved:
        os.dup2(copy, fd)
        os.close(copy)
