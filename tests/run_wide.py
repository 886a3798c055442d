"""Things built once per test run and shared by every xdist worker (read-only to tests).

A session-scoped fixture is per worker process; under ``-n auto`` each worker would build
the same tiny model or trained run again. ``build_once`` builds into a folder under the
run's common temporary folder, under a file lock, so the first worker to ask builds it
and the others wait for it and reuse it::

    folder = build_once(tmp_path_factory, "tiny-sd", lambda target: build_tiny_sd(target))

The build goes to a scratch folder first and is renamed into place when complete, so an
interrupted build is never taken for a finished one. Tests must copy what they change.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def run_folder(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """This run's temporary folder common to all workers (pytest-N, above popen-gwX)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:  # noqa: ANN001
    """The folder ``name`` of this run, made by ``build(folder)`` if no worker made it yet."""
    shared = run_folder(tmp_path_factory) / "run-wide"
    shared.mkdir(parents=True, exist_ok=True)
    final = shared / name
    with open(shared / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not final.is_dir():
            scratch = shared / f".{name}.building-{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            build(scratch)
            os.replace(scratch, final)
    return final
