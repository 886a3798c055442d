"""Fixtures for the explain tests: a data folder with a finished training run.

Kept in a test_* module (it holds no tests) beside the tests it serves. The run is made
once per test module through the training code path (``create_runs`` + ``execute_run``)
and each test gets its own copy of the folder, so tests cannot disturb each other.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from core.catalog import add_image, get_or_create_class, get_or_create_dataset
from core.config import Settings, get_settings
from core.db.engine import dispose_engines, init_db, session_scope
from core.db.models import Image
from core.imageio import decode_image, encode_png
from core.store import ImageStore
from imagemaker import fruit_image

CLASSES = ["apple", "banana"]
IMAGE_SIZE = 32


def add_fruits(settings: Settings, dataset: str, *, per_class: int, size: tuple[int, int],
               seed: int = 0, source: str = "real") -> None:
    store = ImageStore(settings)
    with session_scope(settings, write=True) as session:
        data = get_or_create_dataset(session, dataset, source=source)
        for c_index, label in enumerate(CLASSES):
            image_class = get_or_create_class(session, label)
            for i in range(per_class):
                raw = encode_png(fruit_image(label, seed * 100_003 + c_index * 1009 + i, size))
                generation = ({"prompt": f"a photo of a {label}", "seed": seed * 1000 + i,
                               "gen_index": i, "model": "test", "steps": 1}
                              if source == "synthetic" else None)
                add_image(session, store, decode_image(raw), image_class=image_class, dataset=data,
                          raw=raw, original_name=f"{label}_{i}.png", generation=generation)


@dataclass(frozen=True)
class TrainedRun:
    run_id: int
    real_ids: list[int]
    synthetic_ids: list[int]
    class_names: list[str]


def build_trained_run(settings: Settings) -> TrainedRun:
    """Real 4:3 photos (letterboxed, so they have margins) and square synthetic images of two
    classes; one mixed run of a small CNN for a few epochs on 32x32 inputs."""
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs, execute_run
    from core.training.trainer import TrainConfig

    init_db(settings)
    add_fruits(settings, "fruit-photos", per_class=16, size=(48, 36))
    add_fruits(settings, "fruit-sd", per_class=10, size=(40, 40), seed=7, source="synthetic")
    request = ExperimentRequest(data=DataSpec(mode="mixed"),
                                train=TrainConfig(epochs=3, image_size=IMAGE_SIZE, batch_size=16, seed=0),
                                name="explain fixture")
    (run_id,) = create_runs(request, settings=settings)
    execute_run(run_id, settings)
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Image).order_by(Image.id)))
    return TrainedRun(run_id, [r.id for r in rows if r.source == "real"],
                      [r.id for r in rows if r.source == "synthetic"], CLASSES)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a busy 2-core host torch's threads spin against each other (a 7 s training takes
    40 s); one thread is faster and steadier for these tiny models."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _build_template(folder: Path) -> None:
    home = folder / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTHLAB_HOME", str(home))
        patch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
        patch.delenv("SYNTHLAB_DB_URL", raising=False)
        dispose_engines()
        try:
            info = build_trained_run(get_settings())
        finally:
            dispose_engines()
    (folder / "run.json").write_text(json.dumps(asdict(info)))


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory) -> tuple[Path, TrainedRun]:
    """The data folder with the finished run, built once per test run for every module and
    xdist worker (tests/run_wide.py); tests get copies (``trained``), never this folder."""
    from tests.run_wide import build_once

    folder = build_once(tmp_path_factory, "explain-template", _build_template)
    return folder / "home", TrainedRun(**json.loads((folder / "run.json").read_text()))


@pytest.fixture()
def trained(trained_template, tmp_path, monkeypatch) -> tuple[Settings, TrainedRun]:
    """Settings pointing at a private copy of the data folder with a finished run."""
    template, info = trained_template
    home = tmp_path / "home"
    shutil.copytree(template, home)
    monkeypatch.setenv("SYNTHLAB_HOME", str(home))
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    monkeypatch.delenv("SYNTHLAB_DB_URL", raising=False)
    dispose_engines()
    settings = get_settings()
    init_db(settings)
    yield settings, info
    dispose_engines()
