"""Imports every module that defines tables, so ``Base.metadata`` knows them all."""

import importlib

import core.db.models  # noqa: F401

# Each capability keeps its tables beside its code; a missing module is simply skipped.
for _module in ("core.generation.models", "core.preprocess.models", "core.training.models",
                "core.explain.models", "core.quiz.models", "core.users.models"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:
        if not (exc.name and _module.startswith(exc.name)):
            raise
