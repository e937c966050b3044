"""The `dynamo` console script: `serve`, `ps`, `scale`, `top`, `check`, `planner`, `profile`,
`version`.

Subcommands import their implementation lazily, so `dynamo --help` stays fast and a missing
optional part (e.g. the operator's checks) only fails the command that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from dynamo.runtime.errors import DynamoError, MissingExtraError
from dynamo.runtime.extras import import_extra


def _cmd_serve(args: argparse.Namespace) -> int:
    from dynamo.deploy.serve import ServeConfig, serve_main
    from dynamo.runtime.config import resolve

    return serve_main(resolve(ServeConfig, args))


def _cmd_ps(args: argparse.Namespace) -> int:
    from dynamo.deploy.serve import format_ps
    from dynamo.deploy.state import live_runs, pid_alive, read_state, run_dir_for

    if args.run_dir or args.graph:
        run_dir = Path(args.run_dir) if args.run_dir else run_dir_for(args.graph)
        state = read_state(run_dir)
        print(format_ps(state, alive=pid_alive(state.runner_pid)))
        return 0
    runs = live_runs()
    if not runs:
        print("no running `dynamo serve`")
        return 0
    print("\n\n".join(format_ps(state, alive=True) for _, state in runs))
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    from dynamo.deploy.connector import LocalConnector
    from dynamo.deploy.state import find_run

    run_dir = find_run(args.graph, Path(args.run_dir) if args.run_dir else None)
    connector = LocalConnector(run_dir)
    asyncio.run(connector.set_replicas(args.service, args.replicas))
    print(f"{args.service} scaled to {args.replicas}")
    return 0


def _cmd_top(args: argparse.Namespace) -> int:
    from dynamo.deploy.top import top_main

    return top_main(
        graph=args.graph,
        run_dir=args.run_dir,
        frontends=args.frontend,
        workers=args.worker,
        interval_s=args.interval,
        once=args.once,
    )


def _cmd_version(args: argparse.Namespace) -> int:
    import platform

    import dynamo

    print(f"pydynamo {dynamo.__version__} (python {platform.python_version()})")
    return 0


def _cmd_check(argv: list[str]) -> int:
    try:  # lightkube is a base dependency; a trimmed install still gets one line, not a trace
        module = import_extra("dynamo.operator.check", "operator")
    except MissingExtraError as exc:
        print(f"dynamo check: {exc}", file=sys.stderr)
        return 2
    result: int = module.main(argv, prog="dynamo check")
    return result


def _cmd_planner(argv: list[str]) -> int:
    from dynamo.planner.connectors.virtual_client import main as planner_main

    return planner_main(argv, prog="dynamo planner")


def _cmd_profile(argv: list[str]) -> int:
    from dynamo.profiler.main import main as profiler_main

    return profiler_main(argv, prog="dynamo profile")


def build_parser() -> argparse.ArgumentParser:
    from dynamo.deploy.serve import ServeConfig
    from dynamo.runtime.config import add_arguments

    parser = argparse.ArgumentParser(
        prog="dynamo", description="pydynamo: distributed LLM inference serving."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run a DynamoGraphDeployment on this machine",
        description="Run every service x replica of a graph as child processes.",
    )
    add_arguments(serve, ServeConfig, title="serve options")
    serve.set_defaults(func=_cmd_serve)

    ps = sub.add_parser("ps", help="show the services, replicas and pids of running graphs")
    ps.add_argument("graph", nargs="?", help="graph name (default: every running graph)")
    ps.add_argument("--run-dir", help="run dir of the graph")
    ps.set_defaults(func=_cmd_ps)

    scale = sub.add_parser("scale", help="change a service's replicas in a running graph")
    scale.add_argument("service", help="service name (key of spec.services)")
    scale.add_argument("replicas", type=int, help="new replica count")
    scale.add_argument("--graph", help="graph name (default: the only running graph)")
    scale.add_argument("--run-dir", help="run dir of the graph")
    scale.set_defaults(func=_cmd_scale)

    top = sub.add_parser(
        "top",
        help="a refreshing terminal view of models and workers (rates, latencies, KV usage)",
        description="Scrape the frontends' and workers' /metrics and show rates and latencies "
        "over each interval. Targets: --frontend/--worker, else a running `dynamo serve` "
        "graph, else a frontend on DYN_HTTP_PORT (8000) and the workers in discovery.",
    )
    top.add_argument("graph", nargs="?", help="graph name of a running `dynamo serve`")
    top.add_argument("--run-dir", help="run dir of the graph")
    top.add_argument("--frontend", action="append", default=[], help="frontend base URL (repeat)")
    top.add_argument("--worker", action="append", default=[], help="worker status URL (repeat)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.set_defaults(func=_cmd_top)

    # `dynamo check ARGS...` is handed over unparsed (see `main`); listed here for --help.
    sub.add_parser("check", help="pre-deployment checks of a Kubernetes cluster", add_help=False)

    # `dynamo planner ACTION ...` likewise (the virtual connector's external side).
    sub.add_parser(
        "planner", help="read and acknowledge a virtual planner's decisions", add_help=False
    )

    # `dynamo profile -f DGDR.yaml -o DIR` likewise (python -m dynamo.profiler).
    sub.add_parser(
        "profile", help="profile a DGDR against its SLA and generate the graph", add_help=False
    )

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["check"]:
        try:
            return _cmd_check(args_list[1:])
        except DynamoError as exc:
            print(f"dynamo check: {exc}", file=sys.stderr)
            return 1
    if args_list[:1] == ["planner"]:
        return _cmd_planner(args_list[1:])
    if args_list[:1] == ["profile"]:
        return _cmd_profile(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        result: int = args.func(args)
        return result
    except MissingExtraError as exc:  # like `dynamo check` and the engine entry points
        print(f"dynamo {args.command}: {exc}", file=sys.stderr)
        return 2
    except DynamoError as exc:
        print(f"dynamo {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
