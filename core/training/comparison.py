"""Which training runs can be compared honestly, and how they differ.

Two runs' numbers mean something side by side only when they were trained and tested on
the same classes, tested on the very same real test images, and fed images through the
same preprocessing. ``comparability_warnings`` names every such difference in words;
``config_diff`` shows the configuration keys that differ; ``group_title`` gives a group a
readable name; ``original_comparison`` puts runs beside the original study's figures.

Everything here works on runs from before protocols, recorded pipelines and bootstrap
intervals existed: what is missing is said, not guessed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from core.config import Settings
from core.db.engine import session_scope
from core.training.experiments import group_by_variant, summarize
from core.training.figures import mean_interval, metric_label, runs_text, variant_name
from core.training.models import Run, RunImage
from core.training.protocols import (ORIGINAL_STUDY_CLASSES, ORIGINAL_STUDY_METRICS, PROTOCOLS,
                                     compare_with_original)

PIPELINE_ROLES = ("real", "synthetic")
ROLE_WORDS = {"real": "real images", "synthetic": "synthetic images"}
REAL_TEST_ROLE = "test_real"


# --- what each run used ---------------------------------------------------------------

@dataclass(frozen=True)
class PipelineInfo:
    """One run's preprocessing of one image source."""

    key: str  # equal keys: the same preprocessing
    text: str  # for people
    spec: dict[str, Any] | None  # the recorded spec (None: the run predates recorded specs)
    recorded: bool


def protocol_label(run: Run) -> str:
    """The run's named protocol ("Original study"), or why there is none."""
    config = run.config or {}
    if "protocol" not in config:
        return "not recorded (run predates protocols)"
    name = config.get("protocol")
    if not name:
        return "custom (no named protocol)"
    protocol = PROTOCOLS.get(name)
    return f"{protocol.title} ({name})" if protocol else str(name)


def uses_synthetic(run: Run) -> bool:
    counts = run.counts or {}
    if not counts:
        return run.mode != "real"
    return any(n for role, n in counts.items() if "synthetic" in role)


def run_pipelines(run: Run, settings: Settings | None = None,
                  _memo: dict[tuple[str, int | None], PipelineInfo] | None = None
                  ) -> dict[str, PipelineInfo]:
    """The preprocessing of each image source: the recorded spec (``config["pipelines"]``),
    else the preset name the run asked for, resolved as that preset is defined now."""
    from core.preprocess import Pipeline, PipelineError

    config = run.config or {}
    recorded = config.get("pipelines") or {}
    data = config.get("data") or {}
    size = (config.get("train") or {}).get("image_size")
    out: dict[str, PipelineInfo] = {}
    for role in PIPELINE_ROLES:
        spec = recorded.get(role)
        if isinstance(spec, dict):
            try:
                pipeline = Pipeline.from_dict(spec)
                out[role] = PipelineInfo(pipeline.hash(), _pipeline_text(pipeline), spec, True)
            except PipelineError as exc:
                out[role] = PipelineInfo(_hash(spec), f"unreadable spec ({exc})", spec, True)
            continue
        name = data.get(f"{role}_pipeline", role)
        memo = _memo if _memo is not None else {}
        if (name, size) not in memo:
            memo[(name, size)] = _resolve_now(name, size, settings)
        out[role] = memo[(name, size)]
    return out


def _resolve_now(name: str, size: int | None, settings: Settings | None) -> PipelineInfo:
    from core.preprocess import PipelineError, load_pipeline

    try:
        pipeline = load_pipeline(name, settings, size=size)
    except (PipelineError, ValueError) as exc:
        return PipelineInfo(f"name:{name}:{size}", f"preset \u201c{name}\u201d, no longer "
                            f"defined ({exc}); not recorded with the run", None, False)
    return PipelineInfo(pipeline.hash(), f"{_pipeline_text(pipeline)} (preset \u201c{name}\u201d "
                        "as defined now; the run predates recorded pipelines)", None, False)


def _pipeline_text(pipeline: Any) -> str:  # noqa: ANN401 - core.preprocess.Pipeline
    name = f"\u201c{pipeline.name}\u201d: " if pipeline.name else ""
    return f"{name}{pipeline.describe()}"


def _hash(value: Any) -> str:  # noqa: ANN401
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_set_fingerprints(runs: list[Run], settings: Settings | None = None,
                          role: str = REAL_TEST_ROLE) -> dict[int, tuple[int, str]]:
    """``{run id: (images, hash of the sorted image ids)}`` of each run's recorded test set;
    runs with none recorded (never started) are absent."""
    ids = [run.id for run in runs]
    images: dict[int, list[int]] = defaultdict(list)
    if not ids:
        return {}
    with session_scope(settings) as session:
        rows = session.execute(select(RunImage.run_id, RunImage.image_id)
                               .where(RunImage.run_id.in_(ids), RunImage.role == role))
        for run_id, image_id in rows:
            images[run_id].append(image_id)
    return {run_id: (len(values), hashlib.sha256(",".join(map(str, sorted(values))).encode())
                     .hexdigest()[:16]) for run_id, values in images.items()}


def class_role_counts(runs: list[Run], settings: Settings | None = None
                      ) -> dict[int, dict[str, dict[str, int]]]:
    """``{run id: {role: {class: images}}}`` from the recorded roles of each run."""
    ids = [run.id for run in runs]
    names = {run.id: list(run.class_names or []) for run in runs}
    out: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    if not ids:
        return {}
    with session_scope(settings) as session:
        rows = session.execute(select(RunImage.run_id, RunImage.role, RunImage.label,
                                      func.count(RunImage.id))
                               .where(RunImage.run_id.in_(ids))
                               .group_by(RunImage.run_id, RunImage.role, RunImage.label))
        for run_id, role, label, count in rows:
            classes = names.get(run_id, [])
            name = classes[label] if 0 <= label < len(classes) else f"label {label}"
            out[run_id][role][name] = int(count)
    return {run_id: dict(roles) for run_id, roles in out.items()}


# --- comparability ----------------------------------------------------------------------

def _split(groups: dict[Any, list[int]], describe: dict[Any, str]) -> str:
    return "; ".join(f"{runs_text(ids)}: {describe[key]}"
                     for key, ids in sorted(groups.items(), key=lambda kv: min(kv[1])))


def comparability_warnings(runs: list[Run], settings: Settings | None = None) -> list[str]:
    """Readable warnings, one per difference that makes the runs' numbers incomparable:
    classes, the real test images, preprocessing. None for runs set up alike."""
    if len(runs) < 2:
        return []
    warnings: list[str] = []

    classes: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for run in runs:
        if run.class_names:
            classes[tuple(sorted(run.class_names))].append(run.id)
    if len(classes) > 1:
        warnings.append("The runs are trained and tested on different classes, so no metric is "
                        "comparable between them: "
                        + _split(classes, {key: ", ".join(key) for key in classes}) + ".")

    fingerprints = test_set_fingerprints(runs, settings)
    tested: dict[tuple[int, str], list[int]] = defaultdict(list)
    for run_id, fingerprint in fingerprints.items():
        tested[fingerprint].append(run_id)
    if len(tested) == 2:
        (first, a), (second, b) = sorted(tested.items(), key=lambda kv: min(kv[1]))
        sizes = (f"{first[0]} images each, but not the same ones" if first[0] == second[0]
                 else f"{first[0]} vs {second[0]} images")
        warnings.append(f"{runs_text(a).capitalize()} and {runs_text(b)} are tested on different "
                        f"real test sets ({sizes}).")
    elif len(tested) > 2:
        warnings.append(f"The runs are tested on {len(tested)} different real test sets: "
                        + _split(tested, {key: f"{key[0]} images" for key in tested})
                        + " (sets of the same size hold different images).")
    unknown = [run.id for run in runs if run.id not in fingerprints]
    if unknown and fingerprints:
        warnings.append(f"{runs_text(unknown).capitalize()} recorded no real test images, so "
                        "whether they share the others' test set cannot be checked.")

    memo: dict[tuple[str, int | None], PipelineInfo] = {}
    infos = {run.id: run_pipelines(run, settings, memo) for run in runs}
    for role in PIPELINE_ROLES:
        used = [run for run in runs if role == "real" or uses_synthetic(run)]
        keys: dict[str, list[int]] = defaultdict(list)
        texts: dict[str, str] = {}
        for run in used:
            info = infos[run.id][role]
            keys[info.key].append(run.id)
            texts[info.key] = info.text
        if len(keys) > 1:
            warnings.append(f"The runs preprocess {ROLE_WORDS[role]} differently: "
                            + _split(keys, texts) + ".")
    return warnings


# --- what differs -----------------------------------------------------------------------

# Outcomes and bookkeeping, not choices: they differ between any two runs.
_NOT_CONFIG = {"notes"}


def flatten_config(run: Run) -> dict[str, Any]:
    """``{"data.val_fraction": 0.15, "train.optimizer": "adamw", "pipelines.real": "...", ...}``."""
    config = run.config or {}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:  # noqa: ANN401
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    for key, value in config.items():
        if key in _NOT_CONFIG:
            continue
        if key == "pipelines" and isinstance(value, dict):
            # Name and content hash, not nested steps: short enough for a table cell, and
            # the hash tells a preset edited between runs apart (setup_table describes them).
            for role, spec in value.items():
                flat[f"pipelines.{role}"] = _spec_text(spec)
            continue
        walk(key, value)
    return flat


def _spec_text(spec: Any) -> str:  # noqa: ANN401
    from core.preprocess import Pipeline, PipelineError

    try:
        pipeline = Pipeline.from_dict(spec)
    except (PipelineError, ValueError, TypeError):
        return json.dumps(spec, sort_keys=True, default=str)
    return f"{pipeline.name or 'unnamed'} (spec {pipeline.hash()[:8]})"


MISSING = "\u2014 (not recorded)"


def _cell(value: Any) -> str:  # noqa: ANN401
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def config_diff(runs: list[Run]) -> pd.DataFrame:
    """One row per run, one column per configuration key whose value differs between the
    runs (flattened: ``data.val_fraction``, ``train.optimizer``); all text, so a column
    mixing numbers and "not recorded" still displays."""
    flats = {run.id: flatten_config(run) for run in sorted(runs, key=lambda r: r.id)}
    keys: list[str] = []
    for flat in flats.values():
        keys.extend(k for k in flat if k not in keys)
    differing = [key for key in keys
                 if len({_cell(flat[key]) if key in flat else MISSING
                         for flat in flats.values()}) > 1]
    rows = [{"run": str(run_id), **{key: _cell(flat[key]) if key in flat else MISSING
                                    for key in differing}}
            for run_id, flat in flats.items()]
    return pd.DataFrame(rows, columns=["run", *differing])


def setup_table(runs: list[Run], settings: Settings | None = None) -> pd.DataFrame:
    """Per run: protocol, preprocessing of each source, classes, real test images."""
    memo: dict[tuple[str, int | None], PipelineInfo] = {}
    fingerprints = test_set_fingerprints(runs, settings)
    rows = []
    for run in sorted(runs, key=lambda r: r.id):
        infos = run_pipelines(run, settings, memo)
        test = fingerprints.get(run.id)
        rows.append({"run": str(run.id), "name": run.name, "protocol": protocol_label(run),
                     "real preprocessing": infos["real"].text,
                     "synthetic preprocessing": (infos["synthetic"].text if uses_synthetic(run)
                                                 else "(no synthetic images)"),
                     "classes": ", ".join(run.class_names or []),
                     "real test images": str(test[0]) if test else "not recorded",
                     "real test set id": test[1][:8] if test else ""})
    return pd.DataFrame(rows)


# --- names ------------------------------------------------------------------------------

def base_name(run: Run) -> str:
    """The name the user gave (or the default "mode model"), without the seed and the
    per-variant tags such as "[5 real/class]"."""
    name = run.name.rsplit(" seed ", 1)[0]
    return re.sub(r"(\s*\[[^\]]*\])+\s*$", "", name).strip() or run.name


def _level_text(level: Any) -> str:  # noqa: ANN401
    return "all" if level is None else str(level)


def group_title(runs: list[Run]) -> str:
    """A readable name for a group of runs: its kind, name, mode and what varies, e.g.
    "sweep 'fruit': real vs real+50 synthetic at 5/10/25/50/all real per class"."""
    if not runs:
        return "(no runs)"
    runs = sorted(runs, key=lambda r: r.id)
    first = runs[0]
    kind = first.group_kind or "group"
    config = first.config or {}
    named = config.get("group_name")  # a recipe's own name, e.g. "reproduce original: a + b"
    name = named or base_name(first)
    head = (named if named and named.split(" ", 1)[0] == kind else f"{kind} '{name}'")
    variants = group_by_variant(runs)
    seeds = max(len(group) for group in variants)
    seed_text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    if kind == "sweep":
        levels = sorted({(r.config.get("data") or {}).get("real_per_class") for r in runs},
                        key=lambda v: (v is None, v or 0))
        synthetic = config.get("sweep_synthetic_per_class") or max(
            ((r.config.get("data") or {}).get("synthetic_per_class") or 0 for r in runs), default=0)
        modes = sorted({r.mode for r in runs})
        what = (f"real vs real+{synthetic} synthetic" if modes == ["mixed", "real"]
                else " vs ".join(modes))
        title = f"{head}: {what} at {'/'.join(_level_text(v) for v in levels)} real per class"
        return title + (f", {seed_text}" if seeds > 1 else "")
    configurations = (f"{len(variants)} configuration{'s' if len(variants) != 1 else ''} "
                      f"x {seed_text}")
    if kind == "reproduce":
        if named:
            return f"{head}, {configurations}"
        protocol = config.get("protocol")
        return f"reproduce {protocol or name}: {configurations}"
    modes = ", ".join(sorted({r.mode for r in runs}))
    default = f"{first.mode} {first.model_name}"
    label = name if name == default else f"'{name}' ({modes}, {first.model_name})"
    if named:
        return f"{head}, {configurations if len(variants) > 1 else seed_text}"
    if kind == "repeat":
        return f"repeat: {label}, {seed_text}"
    return f"{kind}: {label}, {len(runs)} runs"


# --- the original study -----------------------------------------------------------------

def compares_with_original(runs: list[Run]) -> bool:
    """Whether the original study's figures belong beside these runs: a run follows its
    protocol, or is tested on its three classes."""
    return any((run.config or {}).get("protocol") == "original"
               or sorted(run.class_names or []) == sorted(ORIGINAL_STUDY_CLASSES) for run in runs)


def original_comparison(runs: list[Run]) -> pd.DataFrame:
    """Per configuration (runs that differ only by seed): the five published figures beside
    this configuration's real-test mean (± std over seeds) and 95% interval, the
    difference, whether the published figure lies inside the interval, and n."""
    rows = []
    for group in group_by_variant([r for r in runs if (r.metrics or {}).get("real_test")]):
        summary = summarize(group).get("real_test", {})
        means = {key: stats["mean"] for key, stats in summary.items()}
        label = f"{variant_name(group)} ({runs_text([r.id for r in group])})"
        for row in compare_with_original(means):
            key = row["metric"]
            published = row["original study"]
            if key in ORIGINAL_STUDY_METRICS:
                stats = summary.get(key)
                interval = mean_interval(group, "real_test", key)
                mine = (None if not stats else f"{stats['mean']:.4f}" if stats["n"] == 1
                        else f"{stats['mean']:.4f} \u00b1 {stats['std']:.4f}")
                rows.append({
                    "configuration": label, "metric": metric_label(key),
                    "original study": f"{published:.4f}", "this study": mine or "n/a",
                    "95% interval": (f"[{interval[0]:.3f}, {interval[1]:.3f}]"
                                     if interval else "not recorded"),
                    "difference": ("n/a" if row["difference"] is None
                                   else f"{row['difference']:+.4f}"),
                    "original inside interval": ("" if not interval else
                                                 "yes" if interval[0] <= published <= interval[1]
                                                 else "no"),
                    "seeds": str(len(group))})
            else:  # the n row: published test images beside ours
                mine_n = row["this run"]
                rows.append({"configuration": label, "metric": key,
                             "original study": str(published),
                             "this study": "n/a" if mine_n is None else str(int(round(mine_n))),
                             "95% interval": "", "difference": "", "original inside interval": "",
                             "seeds": str(len(group))})
    return pd.DataFrame(rows)
