"""``python -m core ingest|stats|export|check``: the main paths through a real subprocess,
the rest through ``core.cli.main`` in-process (same parser and code, faster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.imagemaker import fruit_image, make_imagefolder

ROOT = Path(__file__).resolve().parent.parent


def core(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ))
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    from core.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ingest_stats_export_check(settings, tmp_path, capsys):
    root = make_imagefolder(tmp_path / "fruit", ["apple", "lime"], 3, size=(32, 24))
    (root / "lime" / "broken.jpg").write_bytes(b"nope")

    result = core("ingest", str(root), "--dataset", "cli-set", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == 6 and report["duplicates"] == 0
    assert sorted(f["path"] for f in report["added_files"])[0] == "apple/apple_0.jpg"
    assert report["rejected"] == [{"path": "lime/broken.jpg",
                                   "reason": "not an image (unrecognised format)"}]

    code, text, _ = run_main(capsys, "ingest", str(root))
    assert code == 0 and "0 added, 6 duplicates, 1 rejected" in text and "lime/broken.jpg" in text

    stats = json.loads(run_main(capsys, "stats", "--json")[1])
    assert stats["per_class"] == {"apple": {"real": 3}, "lime": {"real": 3}}
    assert "apple" in run_main(capsys, "stats")[1]

    out = tmp_path / "out.zip"
    exported = json.loads(run_main(capsys, "export", str(out), "--class", "lime", "--dataset",
                                   "cli-set", "--json")[1])
    assert exported["images"] == 3
    with zipfile.ZipFile(out) as zf:
        assert {n.split("/")[0] for n in zf.namelist()} == {"lime", "labels.csv"}
    code, _, err = run_main(capsys, "export", str(out), "--dataset", "nope")
    assert code == 2 and "no dataset named nope" in err
    code, _, err = run_main(capsys, "export", str(out), "--class", "durian")  # not an empty zip
    assert code == 2 and "no class named durian" in err

    code, out_text, _ = run_main(capsys, "check", "--json")
    assert code == 0 and json.loads(out_text)["ok"] is True
    orphan = settings.images_dir / "ab" / ("ab" + "0" * 62 + ".png")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    fruit_image("plum", 1, (16, 16)).save(orphan)
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    code, found, _ = run_main(capsys, "check")
    assert code == 1 and "orphan file" in found
    fixed = json.loads(core("check", "--repair", "--json", check=True).stdout)
    assert fixed["orphan_files"] and not orphan.exists()


def test_ingest_errors_and_help(settings, tmp_path, capsys):
    missing = core("ingest", str(tmp_path / "missing"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    code, _, err = run_main(capsys, "ingest", str(text_file))
    assert code == 2 and "not a folder or a .zip" in err
    damaged = tmp_path / "photos.zip"
    damaged.write_text("not a zip")
    code, _, err = run_main(capsys, "ingest", str(damaged))
    assert code == 2 and "not a valid .zip archive" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(capsys, "ingest", str(tmp_path / "empty"))
    assert code == 2 and "no image files to import" in err and "(it is empty)" in err
    from core.cli import main

    for command in ("ingest", "stats", "export", "check"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m core {command}")


def test_list_limits_must_be_positive_and_help_shows_defaults(settings, capsys) -> None:
    from core.cli import main

    for argv in (["runs", "--limit", "0"], ["jobs", "--limit", "-1"], ["audit", "--limit", "x"],
                 ["quiz", "leaderboard", "--limit", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "default: 10" in capsys.readouterr().out  # --epochs


def test_a_reader_that_goes_away_gets_no_traceback(settings):
    """``python -m core runs --json | head -1``: a closed pipe is the reader's choice."""
    proc = subprocess.Popen([sys.executable, "-m", "core", "stats", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command writes anything
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and b"Traceback" not in err, err.decode()[-500:]
