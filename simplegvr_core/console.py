"""How every command of this project speaks to a terminal: one error line, exit codes, signals.

Used alike by the `simplegvr` command (`app/`), the training scripts (`training/`) and the
benchmarks: a failure is one line on stderr (`prog: error: ...`) and a non-zero exit, never a
traceback (`--debug` shows it); SIGTERM and SIGHUP stop a run as Ctrl-C does, so temporaries are
removed and nothing half-written is left.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
ERRORS = (ValueError, OSError, RuntimeError, MemoryError)  # what a command reports as one line


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


def exit_process(code: int) -> NoReturn:
    """End a command's process with `code`: `sys.exit`, or, after a finished run (code 0) in a
    process a multi-process launcher started (torchrun, accelerate launch: WORLD_SIZE > 1), flush
    stdout and stderr and end it without the interpreter's finalisation. There, Gloo's worker
    threads can still hold objects whose destruction during finalisation aborts the process after
    its work is done ('terminate called without an active exception', SIGABRT;
    pytorch/pytorch#179291): the launcher then reports a finished run, its output written, as
    failed. Seen about once per full test suite on a busy 2-core machine, even after
    destroy_process_group. Every output is complete before this runs (atomic writes), so nothing
    is lost by skipping finalisation. A failing rank exits as any process does, so that the
    launcher stops the others only after rank 0 has said why."""
    if code == 0 and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler, `kill`) and SIGHUP (a closing terminal or SSH session) stop a run as
    Ctrl-C does: temporaries are removed, nothing half-written is left. Only the main thread can
    install handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):  # SIGHUP does not exist on Windows
            signal.signal(getattr(signal, name), handler)


def one_line(e: BaseException) -> str:
    """One line for an error: the first line of its message (its type when it has none); a
    MemoryError, or the RuntimeError an allocator raises, says out of memory; the RuntimeError of a
    writer on a full disk ('unexpected pos') says so (`files.explain_write_error`); another
    RuntimeError names its type and where the traceback is."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if isinstance(e, RuntimeError) and not isinstance(e, RecursionError):
        from .files import explain_write_error

        disk = explain_write_error(e, "a file of this run")
        if disk is not e:
            return str(disk.strerror)
        low = text.lower()
        if "out of memory" in low or "can't allocate memory" in low or "failed to allocate" in low:
            return one_line(MemoryError(first))
        return f"{type(e).__name__}: {first} (--debug shows the traceback)"
    if isinstance(e, MemoryError):
        return (
            "out of memory"
            + (f" ({first})" if text else "")
            + ": use smaller sizes, tiles or chunks"
        )
    return first


def report_errors(prog: str, fn, debug: bool = False) -> int:
    """Run `fn()` for a script's main: 0 when it returns; an error of ERRORS becomes one line on
    stderr (`prog: error: ...`) and exit code 2, Ctrl-C / SIGTERM / SIGHUP exit 130; with `debug`
    (the scripts'
    --debug) the error is re-raised with its traceback."""
    sigterm_as_interrupt()
    try:
        fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, *ERRORS) as e:
        if debug:
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    return 0
