"""Read-only answers about the index that pages show on every rerun, cached per process.

A Streamlit page reruns from the top on every click, so each answer would be read again
each time. Home's totals, the Gallery's splits and Train's and Preprocess's counts now sum
the trigger-kept ``image_counts`` table (about a millisecond, where a GROUP BY over 100,000
images took 110-160 CPU-ms), so for them the cache saves little; the model list walks
folders and the Hugging Face cache. These are cached with
``st.cache_data`` keyed on the database's change marker (``core.db.changes``): any committed
write, from this server, the worker or the CLI, gives a new key, and
``Settings.page_cache_seconds`` bounds the age of an answer besides (and is all that renews
Home's list of diffusion models, which comes from folders, not the database).
"""

from __future__ import annotations

import json
import time
from typing import Any

import streamlit as st

from core.config import Settings
from core.db.changes import change_marker


def _age_slot(settings: Settings) -> int:
    """A key part that changes every ``page_cache_seconds`` (an upper bound on age)."""
    seconds = float(settings.page_cache_seconds)
    return int(time.time() // seconds) if seconds > 0 else time.time_ns()  # 0: no reuse


def _key(settings: Settings) -> tuple:
    return (settings.database_url, change_marker(settings), _age_slot(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _overview(_settings: Settings, key: tuple) -> dict[str, Any]:
    from core import gallery

    stats = gallery.stats(_settings)  # its one GROUP BY over class and source
    names = {c.name: c.display_name for c in gallery.classes(_settings)}
    # The chart's rows, from the same counts (ordered by class, then source, as stats reads them).
    stats["chart"] = [{"class": name, "display_name": names.get(name, name), "source": source,
                       "count": count}
                      for name, by_source in stats["per_class"].items()
                      for source, count in sorted(by_source.items())]
    return stats


def index_overview(settings: Settings) -> dict[str, Any]:
    """``core.gallery.stats`` plus ``chart``: the rows of ``counts_by_class_and_source``."""
    return _overview(settings, _key(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _splits(_settings: Settings, key: tuple) -> list[str]:
    from core import gallery

    return gallery.splits(_settings)


def image_splits(settings: Settings) -> list[str]:
    """``core.gallery.splits``: the split names in use."""
    return _splits(settings, _key(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _training_choices(_settings: Settings, key: tuple):  # noqa: ANN202
    from core.training.data import available_choices

    return available_choices(_settings)


def training_choices(settings: Settings):  # noqa: ANN201 - core.training.data.Choices
    """``core.training.data.available_choices``: images per dataset and class."""
    return _training_choices(settings, _key(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _class_options(_settings: Settings, key: tuple) -> list:
    from core.db.engine import session_scope
    from core.preprocess.compare import class_options

    with session_scope(_settings) as session:
        return class_options(session)


def preprocess_class_options(settings: Settings) -> list:
    """``core.preprocess.compare.class_options``: classes with their usable images."""
    return _class_options(settings, _key(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _diffusion_models(_settings: Settings, key: tuple) -> list:
    from core.generation import registry

    return registry.list_models(_settings)


def diffusion_models(settings: Settings) -> list:
    """``core.generation.registry.list_models`` (it walks the model folders and the Hugging
    Face cache): a model downloaded outside SynthLab shows within ``page_cache_seconds``."""
    return _diffusion_models(settings, _key(settings))


@st.cache_data(show_spinner=False, max_entries=32)
def _aspect_sizes(_settings: Settings, class_name: str | None, seed: int, key: tuple) -> tuple:
    from core.db.engine import session_scope
    from core.preprocess.compare import sample_sizes

    with session_scope(_settings) as session:
        return sample_sizes(session, class_name=class_name, seed=seed)


@st.cache_data(show_spinner=False, max_entries=64)
def _aspect_comparison(_settings: Settings, real_json: str, synthetic_json: str,
                       class_name: str | None, seed: int, key: tuple):  # noqa: ANN202
    from core.preprocess import Pipeline
    from core.preprocess.compare import compare_sizes

    real, synthetic = _aspect_sizes(_settings, class_name, seed, key)
    return compare_sizes(real, synthetic, Pipeline.from_dict(json.loads(real_json)),
                         Pipeline.from_dict(json.loads(synthetic_json)), seed=seed)


def aspect_comparison(settings: Settings, real_pipeline, synthetic_pipeline,  # noqa: ANN001, ANN201
                      class_name: str | None, seed: int):
    """``core.preprocess.compare.compare_aspects``: the sampled sizes (one query per source)
    are cached apart, so editing a pipeline only recomputes its geometry."""
    return _aspect_comparison(settings, json.dumps(real_pipeline.to_dict(), sort_keys=True),
                              json.dumps(synthetic_pipeline.to_dict(), sort_keys=True),
                              class_name, seed, _key(settings))


@st.cache_data(show_spinner=False, max_entries=16)
def _stage_previews(_settings: Settings, image_id: int, pipeline_json: str, seed: int, size: int,
                    key: tuple):  # noqa: ANN202
    from core.preprocess import Pipeline
    from core.preprocess.compare import stage_previews as compute

    return compute(_settings, image_id, Pipeline.from_dict(json.loads(pipeline_json)), seed, size)


def stage_previews(settings: Settings, image_id: int, pipeline, seed: int, size: int):  # noqa: ANN001, ANN201
    """``core.preprocess.compare.stage_previews``: one image through its pipeline, kept while
    nothing changes, so a click elsewhere on Preprocess does not decode and transform the
    full-size picture again."""
    return _stage_previews(settings, image_id, json.dumps(pipeline.to_dict(), sort_keys=True),
                           seed, size, _key(settings))
