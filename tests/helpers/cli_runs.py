"""The CLI in this process: `lmtune.cli.main(argv)` as a user's command line runs it, without the
start of a fresh interpreter. Tests that are about what a command says and returns use this; tests
about the process itself (its exit status as the shell sees it, signals, kill -9, stdout flushing,
environment read at start-up, what a light command imports) keep a real `python -m lmtune`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lmtune.cli import main


def run_cli(capture, *argv: str, cwd: Path | None = None, timeout: float | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lmtune *argv`; `capture` is pytest's capsys or capfd.
    argparse's SystemExit (--help, a bad flag) becomes its code, as the shell would see it. With
    `timeout` the command runs in a thread, so one that blocks (opening a FIFO no one writes, reading
    /dev/zero) fails the test after `timeout` seconds instead of stalling the suite."""
    capture.readouterr()
    old = Path.cwd()
    result: list = []

    def call() -> None:
        try:
            result.append(main([str(a) for a in argv]))
        except SystemExit as exc:
            result.append(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        except BaseException as exc:   # raised again in the test's thread
            result.append(exc)

    if cwd is not None:
        os.chdir(cwd)
    try:
        if timeout is None:
            call()
        else:
            thread = threading.Thread(target=call, daemon=True)
            thread.start()
            thread.join(timeout)
            if thread.is_alive():
                pytest.fail(f"lmtune {' '.join(map(str, argv))} still running after {timeout}s "
                            "(blocked on an odd file?)")
    finally:
        os.chdir(old)
    out, err = capture.readouterr()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0], out, err


TRAINING_LIBRARIES = ("peft", "trl", "lmtune.train.callbacks")


def lmtune_process(*argv: str, **run_kwargs):
    """`python -m lmtune *argv` in a fresh interpreter, which prints at the end, on a last stdout
    line `loaded: [...]`, which of TRAINING_LIBRARIES it had imported: a command that refuses its
    input should not pay for them. Returns (CompletedProcess, that list)."""
    import ast
    import subprocess
    import sys

    code = ("import sys; from lmtune.cli import main; rc = main(sys.argv[1:]); "
            f"print('loaded:', [m for m in {TRAINING_LIBRARIES!r} if m in sys.modules]); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                          **run_kwargs)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    loaded = ast.literal_eval(last.removeprefix("loaded:").strip()) if last.startswith("loaded:") else None
    return done, loaded
