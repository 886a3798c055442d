"""``report``: a self-contained HTML report of a repeat/sweep/reproduce group or of runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli import CliError, emit, positive_int
from core.wording import plural


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a group of training runs",
        description="Write one HTML file with the protocol, data, seeds, metrics (macro and "
                    "weighted, with 95% intervals), comparability warnings, the comparison "
                    "with the original study where it applies, and the plots. It embeds "
                    "plotly.js and opens offline.")
    report.add_argument("group", nargs="?",
                        help="a group id (python -m core runs --json lists each run's group_id)")
    report.add_argument("--runs", nargs="+", type=positive_int, metavar="ID",
                        help="these run ids instead of a group")
    report.add_argument("--out", type=Path,
                        help="the HTML file to write (default: synthlab-report-GROUP.html)")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.training.report import ReportError, resolve_runs, write_report

    if args.group and args.runs:
        raise CliError("give a group id or --runs ID [ID ...], not both")
    if not args.group and not args.runs:
        raise CliError("which runs? give a group id (python -m core runs --json shows each "
                       "run's group_id) or --runs ID [ID ...]")
    target: str | list[int] = args.group or list(args.runs)
    default_name = args.group or "runs-" + "-".join(map(str, args.runs[:5]))
    out = args.out or Path(f"synthlab-report-{default_name}.html")
    if out.is_dir():
        raise CliError(f"{out} is a folder; give a file name such as {out / 'report.html'}")
    settings = get_settings()
    try:
        finished, unfinished = resolve_runs(target, settings)
        path = write_report(target, out, settings)
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    size_kb = path.stat().st_size / 1024
    payload = {"path": str(path), "runs": [r.id for r in finished],
               "left_out": [{"run_id": r.id, "status": r.status} for r in unfinished],
               "bytes": path.stat().st_size}
    text = f"wrote {path} ({plural(len(finished), 'run')}, {size_kb:,.0f} KB)"
    if unfinished:
        text += f"; left out {plural(len(unfinished), 'unfinished run')}"
    emit(payload, args.json, text)
    return 0
