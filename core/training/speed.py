"""How a fit uses the CPU: how many threads, flushing denormal floats, the optimizer's
implementation and the one-off import it needs.

Measured on a shared 2-core host (issue 14): two torch threads ran at 0.39 to 0.46x the
speed of one while other processes kept a core busy, and only beat one thread (1.79x) on an
idle host; once a model fits its training set, denormal floats made late epochs 2.3 to 2.5x
slower. So a fit picks its threads from the cores that are really free and flushes
denormals, and restores both afterwards (they are process-wide and a worker runs other jobs
after this one).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _busy_cores_now(seconds: float = 0.1) -> float | None:
    """Cores busy with other processes right now: non-idle CPU time over a short window
    (0.1 s, 20 clock ticks on 2 cores: every run pays it), from ``/proc/stat`` (Linux),
    less this process's own (its other threads may be busy meanwhile: an import, a
    checkpoint being written; counted, they made a run take 1 thread where 2 were 1.6 to
    1.9x faster); None where it cannot be read."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle
    try:
        own_0, wall_0 = time.process_time(), time.monotonic()
        total_0, idle_0 = sample()
        time.sleep(seconds)
        total_1, idle_1 = sample()
        own_1, wall_1 = time.process_time(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    if total_1 <= total_0 or wall_1 <= wall_0:
        return None
    machine = os.cpu_count() or 1
    busy = machine * (1 - (idle_1 - idle_0) / (total_1 - total_0))
    return max(0.0, busy - (own_1 - own_0) / (wall_1 - wall_0))


def free_cores(load: float | None = None, cores: int | None = None) -> int:
    """Cores not busy with other work: usable cores minus the busy ones, rounded, at least 1.

    Busy: the lower of the 1-minute load average and the CPU time used over the last 0.1 s.
    The load average alone lags by a minute: right after a burst (a job that just ended)
    it still counted cores that had become free, and the run took 1 thread where 2 were
    1.6x faster (bench/train_cpu.py)."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not every platform has a load average
            load = 0.0
        now = _busy_cores_now()
        if now is not None:
            load = min(load, now)
    return max(1, min(cores, int(cores - load + 0.5)))


def choose_threads(wanted: int = 0, *, fixed: bool = False) -> int:
    """``wanted`` threads when it is positive (the user's ``SYNTHLAB_TORCH_THREADS`` or
    ``--threads``), else ``OMP_NUM_THREADS`` when set, else 1 for a ``fixed`` (deterministic) run, whose result must not depend
    on the load, else as many as there are free cores.

    The thread count changes the order of float sums, so two runs of one seed give the same
    weights only with the same count: pin it (``wanted``) to compare runs bit for bit.
    """
    if wanted and wanted > 0:
        return int(wanted)
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))  # the usual way to say it, honoured
    if fixed:
        return 1
    return free_cores()


@contextlib.contextmanager
def cpu_settings(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: leave them) and denormal floats
    flushed to zero; both are put back afterwards."""
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    # set_flush_denormal returns False where the CPU cannot (then nothing changed).
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        if threads:
            torch.set_num_threads(previous_threads)


def make_fast_optimizer(cls: type[torch.optim.Optimizer], parameters: Any,
                        **options: Any) -> torch.optim.Optimizer:
    """``cls`` with its fused implementation (one kernel for every parameter's update,
    1.06x a whole CPU epoch here), else the foreach one where fused is not offered."""
    parameters = list(parameters)
    try:
        return cls(parameters, fused=True, **options)
    except (RuntimeError, ValueError, TypeError):
        return cls(parameters, foreach=True, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimizer state but keep this optimizer's implementation: loading
    replaces the groups' options with those saved, and an older checkpoint's say
    non-fused. Moments are saved as plain (NCHW) tensors while conv weights train
    channels-last, and the fused update pairs a weight's elements with its moments' in memory
    order: each moment takes its weight's layout again, or a resumed run updates with the
    moments of other elements."""
    implementation = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, implementation):
        group["fused"], group["foreach"] = fused, foreach
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape \
                        and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param).copy_(value)


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def warm_optimizer_imports() -> None:
    """Import ``torch._dynamo`` (then scikit-learn's metrics) in a background thread, once
    per process.

    Making any torch optimizer imports it (its methods are wrapped in
    ``torch._disable_dynamo``): 1.4 to 3 s of CPU here, paid while the fit waits. Started
    while the run plans its data and loads its images, the import mostly overlaps that
    work; the fit then finds the module loaded (Python's import lock makes a fit that
    arrives first wait for the same import, never run it twice).
    """
    global _warm_thread
    with _warm_lock:
        if _warm_thread is not None:
            return

        def load() -> None:
            with contextlib.suppress(Exception):
                import torch._dynamo  # noqa: F401
            with contextlib.suppress(Exception):
                # The evaluation after the last epoch needs it (1.2 s idle, 8 s under load).
                from sklearn import metrics  # noqa: F401

        _warm_thread = threading.Thread(target=load, name="warm-torch-dynamo", daemon=True)
        _warm_thread.start()
