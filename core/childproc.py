"""Helper processes (process-pool children) that end when the process that started them dies.

A pool child blocks reading its task queue. When its parent is SIGKILLed nothing ever
closes that queue (each child holds a copy of the queue's write end), so the children
would live on as orphans: decoding nothing, holding memory, and, when forked from the
worker, a copy of everything the worker had open. ``die_with_parent`` is a pool
initializer that prevents this: on Linux the kernel sends the child SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``); elsewhere a daemon thread watches the parent's PID.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_SECONDS = 0.5


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(_WATCH_SECONDS)
        os._exit(1)  # the parent is gone: nobody will read what this process produces
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer (``initargs=(os.getpid(),)``): end this child with its parent.

    SIGKILL, not SIGTERM: pool children ignore SIGTERM so that stopping the worker's process
    group stops the worker first (core.ingest.decoding). Files are written atomically, so a
    killed child leaves at most a temporary ``.part-`` file, never a half image.

    On Linux the signal comes when the *thread* that started the child ends; pools here
    are used inside one call, in the thread that made them, so that thread outlives them.
    """
    if not _parent_death_signal(signal.SIGKILL):
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
