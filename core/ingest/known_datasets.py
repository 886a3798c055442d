"""Public fruit datasets on the Hugging Face Hub that the Import page offers in one click.

Each entry says what the user gets before anything is downloaded: what the images are,
the licence given on the dataset's card, the download size and the classes. Importing
one is an ordinary Hub import job (``core.ingest.jobs.submit_import`` with a Hub id); with
no network the click is refused at once with how to get the data another way, and
nothing is queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import Settings
from core.ingest.huggingface import hub_reachable
from core.ingest.sources import SourceError


@dataclass(frozen=True)
class KnownDataset:
    hub_id: str
    title: str
    description: str
    licence: str
    size: str
    classes: str
    source: str  # "real" or "synthetic": what SynthLab records the images as
    dataset_name: str  # the dataset's name in SynthLab

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.hub_id}"


KNOWN_DATASETS: tuple[KnownDataset, ...] = (
    KnownDataset(
        hub_id="PedroSampaio/fruits-360",
        title="Fruits-360 (a copy on the Hub)",
        description="Mihai Oltean's Fruits-360: one fruit or vegetable per 100x100 px image "
                    "on a white background, train and test splits (Parquet).",
        licence="MIT on the copy's card; the original Fruits-360 is CC BY-SA 4.0",
        size="about 400 MB download (train 299 MB, test 98 MB), tens of thousands of images",
        classes="the Fruits-360 classes of the copied version (apple varieties, banana, "
                "orange, lemon, ... over a hundred)",
        source="real",
        dataset_name="fruits-360"),
    KnownDataset(
        hub_id="DiegoP-S/DatasetSynthesis",
        title="The original study's synthetic set",
        description="4,400 Stable Diffusion 1.5 images made for the study this project "
                    "reproduces, one split per class.",
        licence="see the dataset's card",
        size="4,400 images",
        classes="the study's fruit classes (one split each: Apple, Banana, ...)",
        source="synthetic",
        dataset_name="sd15-study"),
)


def known_dataset(hub_id: str) -> KnownDataset:
    for entry in KNOWN_DATASETS:
        if entry.hub_id == hub_id:
            return entry
    raise SourceError(f"Not a known dataset: {hub_id}")


def offline_instructions(entry: KnownDataset) -> str:
    return (f"On a machine with a network, run `python -c \"import datasets; "
            f"datasets.load_dataset('{entry.hub_id}').save_to_disk('{entry.dataset_name}')\"`, "
            f"copy the `{entry.dataset_name}` folder here and import it as a folder "
            f"(`python -m core ingest {entry.dataset_name} --source {entry.source}`).")


def submit_known(hub_id: str, *, user: Any = None,  # noqa: ANN401 - an Identity or a name
                 settings: Settings | None = None) -> int:
    """Queue the import of a known Hub dataset; returns the job id.

    Raises ``SourceError`` at once, with nothing queued, when the Hub cannot be reached
    (offline mode set, no network): a job that can only fail would say so much later.
    """
    from core.ingest.jobs import submit_import

    entry = known_dataset(hub_id)
    unreachable = hub_reachable()
    if unreachable:
        raise SourceError(f"Cannot import {entry.hub_id}: the Hugging Face Hub is out of reach "
                          f"({unreachable}). Nothing was queued. {offline_instructions(entry)}")
    return submit_import(entry.hub_id, dataset=entry.dataset_name, source=entry.source,
                         user=user, settings=settings, hub_only=True)
