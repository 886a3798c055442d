"""``cluster``: the Ray cluster behind the ``ray`` execution backend, node by node."""

from __future__ import annotations

import argparse

from core.cli import CliError, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser(
        "cluster", help="show the Ray cluster's nodes, GPUs and what each is running "
                        "(SYNTHLAB_EXECUTION_BACKEND=ray)")
    cluster.add_argument("--json", action="store_true", help="machine-readable output")
    cluster.set_defaults(func=_cluster)


def _cluster(args: argparse.Namespace) -> int:
    from core.cluster import ClusterError, cluster_report, format_report, uses_ray
    from core.config import get_settings

    settings = get_settings()
    try:
        if not uses_ray(settings):
            emit({"backend": "local", "nodes": []}, args.json,
                 "execution backend: local (jobs run in worker processes on this host); set "
                 "SYNTHLAB_EXECUTION_BACKEND=ray to use a Ray cluster")
            return 0
        report = cluster_report(settings)
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    emit({"backend": "ray", **report}, args.json, format_report(report))
    return 0
