"""Preview images: made now, one at a time on a background thread, never stored.

The Generate page starts a ``PreviewRun`` and returns at once; a fragment shows each image
as it arrives and offers Cancel, so a slow model never freezes the page, and the user may
leave it (the run ends by itself). The seeds and prompts are the job's first ones, so a
preview shows what the job will make.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.catalog import class_key
from core.config import Settings
from core.generation.generator import GenerationConfig, PipelineRunner, WorkItem
from core.generation.prompts import PromptConfig, prompt_for
from core.generation.seeds import image_seed

RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "failed"

# Loaded pipelines are shared by the process (core.generation.loading caches them) and a
# diffusers pipeline keeps per-call state (its scheduler's timesteps): previews of several
# sessions, or a new preview while a cancelled one finishes its image, take turns.
_PIPELINE_TURN = threading.Lock()


class PreviewCancelled(Exception):
    """Raised inside the pipeline's step callback once the user cancelled the preview."""


def preview_items(config: GenerationConfig, class_name: str, prompt_config: PromptConfig,
                  count: int) -> list[WorkItem]:
    """The first ``count`` work items of ``class_name``: the job's own seeds and prompts."""
    key = class_key(class_name)
    return [WorkItem(key, i, image_seed(config.seed, key, i),
                     prompt_for(prompt_config, i, base_seed=config.seed, class_key=key),
                     prompt_config.negative_prompt) for i in range(count)]


@dataclass
class PreviewRun:
    """``count`` preview images of one class, made on a thread; read ``images`` any time."""

    config: GenerationConfig
    class_name: str
    prompt_config: PromptConfig
    settings: Settings
    count: int = 4
    # Called on the preview's thread after each image, with the number made so far.
    on_image: Callable[[int], None] | None = None
    images: list[tuple[Any, str, int]] = field(default_factory=list)  # (image, prompt, seed)
    status: str = RUNNING
    error: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PreviewRun:
        self.config.validate()
        self.prompt_config.validate()
        self._thread = threading.Thread(target=self._run, name="synthlab-preview", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (tests, scripts); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished

    # the reporter PipelineRunner calls
    def check_cancelled(self, refresh: bool = True) -> None:  # noqa: ARG002 - Reporter protocol
        if self._cancel.is_set():
            raise PreviewCancelled()

    def progress(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        pass

    def _run(self) -> None:
        from core.generation.loading import load_pipeline, set_scheduler

        try:
            loaded = load_pipeline(self.config.model, self.settings, scheduler=self.config.scheduler)
            runner = PipelineRunner(loaded, self.config, 1)
            for item in preview_items(self.config, self.class_name, self.prompt_config, self.count):
                with _PIPELINE_TURN:
                    self.check_cancelled()
                    set_scheduler(loaded, self.config.scheduler)  # another preview's may differ
                    (image,) = runner.generate([item], self)
                self.images.append((image, item.prompt, item.seed))
                if self.on_image is not None:
                    self.on_image(len(self.images))
        except PreviewCancelled:
            self.status = CANCELLED
        except Exception as exc:  # noqa: BLE001 - shown to the user; the page stays usable
            self.error = str(exc) or type(exc).__name__
            self.status = FAILED
        else:
            self.status = DONE

