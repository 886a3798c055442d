"""What the worker writes to its log: one line per job event, nothing else.

The dashboard's worker writes its standard output to ``logs/worker-<slot>.log`` (shown on
the Admin page) and its standard error to ``logs/worker-<slot>.debug.log``. Job events go
to standard output through the ``synthlab`` logger; libraries (diffusers, transformers,
huggingface_hub, datasets, torch) write their warnings and any leftover progress output to
standard error, that is the debug file. Progress bars are switched off in the worker
altogether: a bar redrawn with carriage returns and escape codes is unreadable in a file.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from core.jobs import JobContext

# Read by tqdm (4.66+), huggingface_hub, datasets and transformers when they start: set
# before any of them is imported in the worker.
QUIET_PROGRESS_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                      "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}

events = logging.getLogger("synthlab.jobs")


def configure_worker_logging() -> None:
    """Progress bars off; ``synthlab`` loggers at INFO to standard output, one line each;
    everything else (library warnings at WARNING, Python warnings) to standard error."""
    for name, value in QUIET_PROGRESS_ENV.items():
        os.environ.setdefault(name, value)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    ours = logging.getLogger("synthlab")
    ours.handlers = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> stderr


def one_line(text: str) -> str:
    """A message as one log line: no carriage returns, newlines or escape sequences."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return " ".join(text.replace("\r", "\n").split())


@dataclass
class LoggedJobContext(JobContext):
    """A ``JobContext`` that also logs the job's progress every ``percent_step`` percent."""

    percent_step: int = 10
    _total: int | None = None
    _next_percent: int = field(default=0)

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 *, force: bool = False) -> None:
        if total is not None:
            self._total = total
        if self.percent_step > 0 and self._total:
            percent = int(100 * min(done, self._total) / self._total)
            if percent >= max(self._next_percent, self.percent_step):
                shown = percent - percent % self.percent_step
                events.info("job #%s %s: %d%% (%s)", self.job_id, self.kind, shown,
                            one_line(message) if message else f"{done}/{self._total}")
                self._next_percent = shown + self.percent_step
        super().progress(done, total, message, force=force)


def log_job_end(job_id: int, kind: str, status: str, started: float,
                error: str | None = None) -> None:
    took = dt.timedelta(seconds=round(time.monotonic() - started))
    line = f"job #{job_id} {kind}: {status} after {took}"
    if error:
        line += f": {one_line(error)}"
    (events.error if status == "failed" else events.info)(line)
