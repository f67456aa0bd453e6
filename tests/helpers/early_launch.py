"""Launches that start as soon as the session's tests are collected, in a background thread.

The tests run in one process with one torch thread (tests/conftest.py), so one of the two cores a
CI machine has sits idle for most of the suite. A test module whose real subprocess launches take
long and depend on nothing but their inputs (the DDP runs, tests/train/test_distributed_ddp.py)
registers a function at import; conftest.py starts it when collection ends if that module was
collected; the module's fixture waits for its result. Nothing here changes what a test checks: the
same commands run on the same inputs, only earlier.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

@dataclass(frozen=True)
class _Launch:
    module: str                      # the registering test module's file
    used_by: str                     # the fixture or test function that reads the result
    prepare: Callable[[Path], Any]
    launch: Callable[[Any], Any]


_REGISTERED: dict[str, _Launch] = {}
_STARTED: dict[str, Future] = {}
_POOL: ThreadPoolExecutor | None = None


def register(name: str, module_file: str, used_by: str, prepare: Callable[[Path], Any],
             launch: Callable[[Any], Any]) -> None:
    """`prepare(work_dir)` writes the inputs, in the calling thread (imports are not thread-safe:
    transformers' lazy modules fail when two threads import them at once); `launch(inputs)`, in the
    background, only runs the subprocesses and returns what the tests read. `module_file` (the test
    module's __file__) and `used_by` (the fixture or test function that reads the result): the
    launch starts early only when a selected test of that module needs it."""
    _REGISTERED[name] = _Launch(str(Path(module_file).resolve()), used_by, prepare, launch)


def _needed(launch: _Launch, items) -> bool:
    return any(str(Path(item.path).resolve()) == launch.module
               and (launch.used_by in getattr(item, "fixturenames", ())
                    or getattr(item, "originalname", item.name) == launch.used_by) for item in items)


def start_registered(items) -> None:
    """Called by conftest.py once collection is done, with the selected test items."""
    for name, launch in _REGISTERED.items():
        if name not in _STARTED and _needed(launch, items):
            _start(name)


def _start(name: str) -> None:
    global _POOL
    # one launch at a time: each already starts two or three processes on a 2-core machine
    _POOL = _POOL or ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-launch")
    work = Path(tempfile.mkdtemp(prefix=f"lmtune-early-{name}-"))
    atexit.register(shutil.rmtree, work, True)
    with contextlib.redirect_stderr(io.StringIO()):   # model saving's progress bars, outside capture here
        inputs = _REGISTERED[name].prepare(work)
    _STARTED[name] = _POOL.submit(_REGISTERED[name].launch, inputs)


def result(name: str, timeout: float = 900) -> Any:
    """The launch's return value (started now if collection did not start it); its exception, if it raised."""
    if name not in _STARTED:
        _start(name)
    return _STARTED[name].result(timeout=timeout)
