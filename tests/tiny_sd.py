"""The tests' tiny random-weight Stable Diffusion pipeline: the one builder lives in
``core.generation.tiny`` (the demo uses it too); this module only adds the per-session
shared copy::

    from tests.tiny_sd import build_tiny_sd
    model_dir = build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")
"""

from __future__ import annotations

from pathlib import Path

from core.generation.tiny import (PROMPT_WORDS, TINY_SIZE, TINY_STEPS, build_tiny_sd,
                                  write_tokenizer_files)

__all__ = ["PROMPT_WORDS", "TINY_SIZE", "TINY_STEPS", "build_tiny_sd", "tiny_sd_for_session",
           "write_tokenizer_files"]


def tiny_sd_for_session(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """One tiny model per test run, shared by every test module and xdist worker that asks
    for it (tests/run_wide.py). It is alone in its folder: tests point
    ``SYNTHLAB_LOCAL_MODELS_DIR`` at that folder and expect only this model there."""
    from tests.run_wide import build_once

    models = build_once(tmp_path_factory, "shared-models",
                        lambda folder: build_tiny_sd(folder / "tiny-sd"))
    return models / "tiny-sd"


if __name__ == "__main__":  # pragma: no cover - handy by hand: python -m tests.tiny_sd DIR
    import sys

    print(build_tiny_sd(sys.argv[1] if len(sys.argv) > 1 else "models/tiny-sd"))
