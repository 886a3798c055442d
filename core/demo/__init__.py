"""The offline demo (``python -m core demo``; the Home page's button on an empty index).

``build_demo`` draws a small fruit-like dataset, installs a tiny random-weight diffusion
pipeline as "demo model: makes noise, for trying the flow" and queues one generation, one
training run and one attribution job, so every page has something to show without a
download. ``remove_demo`` takes exactly that away again.
"""

from core.demo.build import (DEMO_DATASET, DEMO_GENERATED_DATASET, DEMO_MARK, DEMO_MODEL_LABEL,
                             DemoError, DemoReport, build_demo, demo_job_ids, is_demo_present,
                             model_dir, wait_for_jobs)
from core.demo.drawing import DEMO_CLASSES
from core.demo.remove import RemovalReport, remove_demo

__all__ = ["DEMO_CLASSES", "DEMO_DATASET", "DEMO_GENERATED_DATASET", "DEMO_MARK",
           "DEMO_MODEL_LABEL", "DemoError", "DemoReport", "RemovalReport", "build_demo",
           "demo_job_ids", "is_demo_present", "model_dir", "remove_demo", "wait_for_jobs"]
