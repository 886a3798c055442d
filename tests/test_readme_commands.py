"""The README's two commands are what a newcomer runs, and ``.ci/run`` runs the second (issue 15)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", readme, re.S)]


def test_ci_runs_exactly_the_readmes_test_command():
    start, test = _bash_blocks()[:2]
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == test
    assert test.endswith("-m pytest") and "requirements-dev.txt" in test
    assert start.endswith("-m streamlit run app.py") and "requirements.txt" in start


def test_both_commands_make_and_use_their_own_virtual_environment():
    for command in _bash_blocks()[:2]:
        steps = [shlex.split(step) for step in command.split("&&")]
        # No ensurepip needed (python3-venv may be missing), and the system pip installs into
        # the environment, never into the externally managed system Python.
        assert steps[0] == ["python3", "-m", "venv", "--without-pip", ".venv"]
        assert steps[1][:5] == ["python3", "-m", "pip", "--python", ".venv/bin/python"]
        assert steps[1][5] == "install"
        assert steps[2][0] == ".venv/bin/python"
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.skipif(shutil.which("python3") is None, reason="no python3 on PATH")
def test_the_system_pip_reaches_an_environment_made_without_pip(tmp_path):
    """The mechanism itself, on this machine's python3: the pip it runs is the system's, the
    interpreter it installs for is the environment's (a fresh clone's full install is run
    by CI)."""
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    assert not (venv / "bin" / "pip").exists()
    out = subprocess.run(["python3", "-m", "pip", "--python", str(venv / "bin" / "python"),
                          "list", "--format=freeze"], check=True, capture_output=True, text=True)
    assert "torch" not in out.stdout  # the environment's packages, not the system's
