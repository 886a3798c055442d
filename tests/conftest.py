"""Shared fixtures: every test gets its own data folder and SQLite database."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never reach a network or a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    """Settings pointing at a fresh data folder; the app and CLI see the same via env."""
    from core.config import get_settings
    from core.db.engine import dispose_engines, init_db

    home = tmp_path / "synthlab-home"
    monkeypatch.setenv("SYNTHLAB_HOME", str(home))
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    monkeypatch.delenv("SYNTHLAB_DB_URL", raising=False)
    dispose_engines()
    current = get_settings()
    init_db(current)
    yield current
    dispose_engines()


@pytest.fixture()
def output_dir(request) -> Path:
    """A folder kept after the run (screenshots, reports): test-output/<test name>."""
    folder = ROOT / "test-output" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are all per-call overhead: a second thread only fights over a shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """AppTest runs its page script as ``__main__`` and leaves it there; a later test's
    spawned process pool would then re-run that (temporary) script. Put the real one back
    after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
