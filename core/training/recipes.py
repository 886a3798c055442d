"""Recipes: whole studies queued as one group of runs.

``reproduce original`` trains real-only, synthetic-only, mixed and pretrain-finetune, each
under the original study's protocol and under SynthLab's default, with several seeds, on
the same classes and the same held-out real test set, so the two protocols and the four
ways of using synthetic images can be compared side by side (and with the published
figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import Settings, get_settings
from core.training.data import MODES, DataError, DataSpec, available_choices
from core.training.experiments import ExperimentRequest, create_runs
from core.training.protocols import ORIGINAL, SYNTHLAB, protocol_options
from core.training.trainer import TrainConfig

RECIPES = ("original",)
# The original study had a "mixed" class (several fruits in one photo) and dropped it.
DROPPED_CLASSES = ("mixed",)
# SynthLab's own way to mix: half of the training set synthetic.
SYNTHLAB_MIX_RATIO = 0.5


@dataclass
class Reproduction:
    """What ``reproduce original`` queued: the group, its runs and what it decided."""

    group_id: str | None
    run_ids: list[int]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


def reproduction_classes(real: str, synthetic: str, classes: list[str] | None,
                         settings: Settings) -> tuple[list[str], list[str]]:
    """The classes to use and notes on the choice: those given, else every class with real
    and synthetic images, less the study's dropped ``mixed`` class."""
    notes: list[str] = []
    if classes:
        return sorted(classes), notes
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass

    with session_scope(settings) as session:
        def present(dataset: str) -> set[str]:
            return set(session.scalars(
                select(ImageClass.name).join(Image, Image.class_id == ImageClass.id)
                .join(Dataset, Image.dataset_id == Dataset.id)
                .where(Dataset.name == dataset, Image.excluded.is_(False)).distinct()))
        real_classes, synthetic_classes = present(real), present(synthetic)
    shared = real_classes & synthetic_classes
    dropped = sorted(shared & set(DROPPED_CLASSES))
    if dropped:
        notes.append(f"class {', '.join(dropped)} left out, as in the original study")
    only_one = sorted((real_classes ^ synthetic_classes) - set(DROPPED_CLASSES))
    if only_one:
        notes.append(f"classes without both real and synthetic images left out: {', '.join(only_one)}")
    chosen = sorted(shared - set(DROPPED_CLASSES))
    if len(chosen) < 2:
        raise DataError(f"datasets {real!r} and {synthetic!r} share {len(chosen)} class(es) "
                        f"({', '.join(chosen) or 'none'}); the study needs at least 2")
    return chosen, notes


def original_study_requests(real: str, synthetic: str, classes: list[str], *, seeds: int = 5,
                            seed: int = 0, split_seed: int = 0, epochs: int | None = None,
                            device: str = "auto", name: str = "reproduce original"
                            ) -> list[ExperimentRequest]:
    """Four modes x two protocols, ``seeds`` seeds each (seeds ``seed`` .. ``seed+seeds-1``)."""
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    requests = []
    for protocol in (ORIGINAL, SYNTHLAB):
        data_values, train_values = protocol_options(protocol.name, train={"epochs": epochs})
        train_values.setdefault("image_size", 64)
        for mode in MODES:
            mix: dict[str, object] = {}
            if mode == "mixed":
                mix = {"mix_half": True} if protocol is ORIGINAL else {"mix_ratio": SYNTHLAB_MIX_RATIO}
            data = DataSpec(mode=mode, classes=classes, real_datasets=[real],
                            synthetic_datasets=[synthetic], split_seed=split_seed, **mix,
                            **data_values)
            train = TrainConfig(seed=seed, device=device, **train_values)
            requests.append(ExperimentRequest(data=data, train=train, repeats=seeds,
                                              name=f"{name}: {protocol.title}, {mode}",
                                              protocol=protocol.name))
    return requests


def queue_reproduction(real: str, synthetic: str, *, classes: list[str] | None = None,
                       seeds: int = 5, seed: int = 0, split_seed: int = 0,
                       epochs: int | None = None, created_by: str | None = None,
                       settings: Settings | None = None) -> Reproduction:
    """Create the runs of ``reproduce original`` (queued; execute them with a train job or
    in the foreground). Checks the data of every configuration first."""
    settings = settings or get_settings()
    choices = available_choices(settings)
    if real not in choices.real_datasets:
        raise DataError(f"no real dataset named {real!r}; real datasets: "
                        f"{', '.join(choices.real_datasets) or 'none (import one first)'}")
    if synthetic not in choices.synthetic_datasets:
        raise DataError(f"no synthetic dataset named {synthetic!r}; synthetic datasets: "
                        f"{', '.join(choices.synthetic_datasets) or 'none (generate or import one)'}")
    chosen, notes = reproduction_classes(real, synthetic, classes, settings)
    requests = original_study_requests(real, synthetic, chosen, seeds=seeds, seed=seed,
                                       split_seed=split_seed, epochs=epochs, device=settings.device)
    run_ids = create_runs(requests, created_by=created_by, settings=settings,
                          group_kind="reproduce",
                          group_name=f"reproduce original: {real} + {synthetic}")
    from core.training.experiments import get_run

    first = get_run(run_ids[0], settings)
    return Reproduction(first.group_id if first else None, run_ids, chosen, notes)
