"""One-click imports of the known public fruit datasets, and a clear refusal offline (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.ingest.huggingface import check_hub_id
from core.ingest.known_datasets import KNOWN_DATASETS, submit_known
from core.ingest.sources import SourceError

ROOT = Path(__file__).resolve().parent.parent


def test_every_known_dataset_is_a_hub_id_with_what_a_user_needs_to_know():
    assert KNOWN_DATASETS
    for entry in KNOWN_DATASETS:
        check_hub_id(entry.hub_id)
        assert entry.source in ("real", "synthetic")
        assert all([entry.title, entry.description, entry.licence, entry.size, entry.classes])


def test_the_import_page_refuses_a_click_offline_and_queues_nothing(settings):
    # conftest sets HF_HUB_OFFLINE=1, as a machine without a network would be configured.
    at = AppTest.from_file(str(ROOT / "pages" / "import_data.py"), default_timeout=60).run()
    assert not at.exception
    button = next(b for b in at.button if b.label == "Import fruits-360")
    button.click().run()
    assert not at.exception and not at.success
    message = " ".join(e.value for e in at.error).replace("\\", "")  # markdown escapes
    assert "Nothing was queued" in message and "HF_HUB_OFFLINE" in message
    assert "save_to_disk" in message  # and how to get the data another way
    assert jobs.list_jobs(kind="import", settings=settings) == []


def test_an_unreachable_hub_is_refused_at_once(settings, monkeypatch):
    """No offline flag: the Hub's address is really tried (a closed local port here)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1")
    with pytest.raises(SourceError, match="no network: cannot reach 127.0.0.1.*Nothing was queued"):
        submit_known("DiegoP-S/DatasetSynthesis", user="ann", settings=settings)
    assert jobs.list_jobs(kind="import", settings=settings) == []
