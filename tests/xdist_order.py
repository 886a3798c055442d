"""Hand test files to the xdist workers longest first, and one at a time.

With ``--dist loadfile`` a file runs on one worker, so the wall time is bounded by how the
files are packed onto the workers. xdist's own order is by number of tests, which put the
one-test browser files (each a minute or more) last, and it queues up to three tests
ahead on a worker: at the end one worker could still hold two of those files while the
other had nothing left. Here the files go longest first (the classic
longest-processing-time rule), by the seconds recorded in ``tests/durations.json``, and a
worker gets its next file only when it is on the last test of its current one.

A file missing from ``durations.json`` counts ``DEFAULT_SECONDS_PER_TEST`` per test. Each
run writes the figures it measured to ``test-output/durations.json``; copy that file over
``tests/durations.json`` after adding or changing slow tests (only the order matters, so
figures from any one host are fine).
"""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict
from pathlib import Path

from xdist.scheduler import LoadFileScheduling

DURATIONS_FILE = Path(__file__).resolve().parent / "durations.json"
DEFAULT_SECONDS_PER_TEST = 1.0


def load_durations(path: Path = DURATIONS_FILE) -> dict[str, float]:
    """Seconds per test file (``tests/test_x.py``); empty when the file is missing or bad."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}


class LongestFirstFileScheduling(LoadFileScheduling):
    """``loadfile`` with the work queue sorted by expected seconds and no look-ahead."""

    def __init__(self, config, log=None) -> None:  # noqa: ANN001 - pytest.Config, xdist Producer
        super().__init__(config, log)
        self.durations = load_durations()
        self._ordered = False

    def expected_seconds(self, scope: str, work_unit: dict[str, bool]) -> float:
        return self.durations.get(scope, DEFAULT_SECONDS_PER_TEST * len(work_unit))

    def _assign_work_unit(self, node) -> None:  # noqa: ANN001 - xdist WorkerController
        if not self._ordered:
            # The queue is complete once the first unit is handed out (``schedule``).
            ranked = sorted(self.workqueue.items(),
                            key=lambda item: -self.expected_seconds(*item))
            self.workqueue = OrderedDict(ranked)
            self._ordered = True
        super()._assign_work_unit(node)

    def _reschedule(self, node) -> None:  # noqa: ANN001 - xdist WorkerController
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        # A worker runs a test only once it knows the next one (for fixture teardown), so
        # it needs its next file when one test of the current file is left, not earlier:
        # a file queued behind a long one could have run at once on the other worker.
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)


class DurationRecorder:
    """Controller-side plugin: seconds per file this run (setup + call + teardown)."""

    def __init__(self, out_path: Path) -> None:
        self.out_path = out_path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001 - pytest TestReport
        self.seconds[report.nodeid.split("::", 1)[0]] += report.duration

    def pytest_sessionfinish(self) -> None:
        if not self.seconds:
            return
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        ranked = dict(sorted(((k, round(v, 1)) for k, v in self.seconds.items()),
                             key=lambda item: -item[1]))
        self.out_path.write_text(json.dumps(ranked, indent=1) + "\n")
