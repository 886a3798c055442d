"""The remembered page forms: per user, any name, and a damaged file is no error."""

from __future__ import annotations

import pytest

from core.users.form_memory import MAX_FORM_BYTES, _path, load_form, save_form


def test_forms_are_per_user_and_survive_odd_names_and_damage(settings):
    assert load_form("ann", "generate", settings) == {}
    assert save_form("ann", "generate", {"gen_steps": 3, "gen_classes": ["kiwi"]}, settings)
    assert not save_form("ann", "generate", {"gen_classes": ["kiwi"], "gen_steps": 3}, settings)
    assert save_form("../../etc/Zoë", "generate", {"gen_steps": 9}, settings)
    assert load_form("ann", "generate", settings) == {"gen_steps": 3, "gen_classes": ["kiwi"]}
    assert load_form("../../etc/Zoë", "generate", settings) == {"gen_steps": 9}
    assert _path("../../etc/Zoë", "generate", settings).parent == settings.home_path / "forms" / "generate"
    _path("ann", "generate", settings).write_text("{not json")
    assert load_form("ann", "generate", settings) == {}
    with pytest.raises(ValueError):
        save_form("ann", "../x", {}, settings)
    with pytest.raises(ValueError):
        save_form("ann", "generate", {"big": "x" * MAX_FORM_BYTES}, settings)
