"""Isolation room: run one call in a fresh child process, so its crash or its memory figure is that call's alone.

Children are forked from a fork server that has imported torch and nothing else of a trial (no model, no
data, no thread pool started), so every child starts from the same clean state: cheap to start, independent
of what the worker process holds in its caches, and a segfault or abort in a native runtime kills only it.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")
PRELOAD = ["workers.isolated_preload"]
_context: multiprocessing.context.ForkServerContext | None = None


class ChildDied(RuntimeError):
    """The child process ended without an answer: killed by a signal or exited."""

    def __init__(self, exitcode: int | None, output: str):
        self.exitcode, self.output = exitcode, output
        if exitcode is not None and exitcode < 0:
            cause = f"killed by {signal.Signals(-exitcode).name}"
        else:
            cause = f"exited with status {exitcode}"
        tail = "\n".join(output.strip().splitlines()[-5:])
        super().__init__(f"the isolated child process was {cause}" + (f"; its last output:\n{tail}" if tail else ""))


class ChildTimedOut(RuntimeError):
    """The child gave no answer within its time limit and was killed."""

    def __init__(self, timeout_s: float, output: str):
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-5:])
        super().__init__(f"the isolated child process gave no answer within {timeout_s:.0f} s and was killed"
                         + (f"; its last output:\n{tail}" if tail else ""))


class ChildFailed(RuntimeError):
    """The call raised in the child; the message carries the child's exception and traceback tail."""

    def __init__(self, error_type: str, text: str):
        self.error_type = error_type
        super().__init__(text)


def _server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(conn: Connection, output: str, fn: Callable[..., Any], args: tuple) -> None:
    # Native libraries write to the file descriptors: send both to a file the parent reads back.
    fd = os.open(output, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        result = ("ok", fn(*args))
    except BaseException as exc:  # the parent turns it into the trial's error
        tail = "".join(traceback.format_exception(exc)).splitlines()[-12:]
        result = ("error", (type(exc).__name__, f"{type(exc).__name__}: {exc}\n" + "\n".join(tail)))
    conn.send(result)
    conn.close()


def run_isolated(fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> tuple[T, str]:
    """`fn(*args)` in a fresh child: (its result, what it printed). `fn` and `args` must pickle.

    Raises ChildFailed when `fn` raised, ChildDied when the child died without answering, ChildTimedOut
    (after killing it) when it gave no answer within `timeout_s`.
    """
    context = _server()
    receive, send = context.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="quantsweep-child-", suffix=".log") as log:
        process = context.Process(target=_child, args=(send, log.name, fn, args), daemon=True)
        process.start()
        send.close()
        try:
            if timeout_s is not None and not receive.poll(timeout_s):
                process.kill()
                process.join()
                raise ChildTimedOut(timeout_s, _read(log.name))
            status, value = receive.recv()
        except EOFError:
            process.join()
            raise ChildDied(process.exitcode, _read(log.name)) from None
        finally:
            receive.close()
        process.join()
        output = _read(log.name)
    if status == "error":
        raise ChildFailed(*value)
    return value, output


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")
