"""`python -m dynamo.profiler --config DGDR.yaml --output-dir DIR` (and `dynamo profile`).

Reads the request, sweeps the candidate engines (rapid: simulated; thorough: deployed with
`dynamo serve` here or as trial DGDs on Kubernetes, `--deploy-target`, and measured with real
HTTP load), picks the highest throughput per GPU that
meets the SLA, profiles the picked engines in depth and writes the output dir. Exit 0 on
success; otherwise non-zero with a one-line reason as the last line on stderr (a profiling
Job's termination message). SIGTERM unwinds like Ctrl-C (exit 130), tearing down what
thorough deployed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from dynamo.profiler.config import MODES, ProfileRequest, load_request
from dynamo.profiler.measure import Measurer
from dynamo.profiler.overhead import MEASURED, parse_overhead
from dynamo.profiler.progress import ProgressBar
from dynamo.profiler.rapid import RapidMeasurer
from dynamo.profiler.results import RESULTS_FILE, results_document, write_outputs
from dynamo.profiler.select import select
from dynamo.profiler.sweep import (
    interpolation_points,
    profile_decode,
    profile_prefill,
    sweep_candidates,
    sweep_points,
)
from dynamo.profiler.thorough import DEPLOY_TARGETS
from dynamo.runtime.errors import DynamoError, MissingExtraError

EXIT_ERROR, EXIT_SLA_UNMET = 1, 3


def build_parser(prog: str = "python -m dynamo.profiler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Profile engine configurations against a DGDR's SLA and generate the "
        "graph (DynamoGraphDeployment + planner profile data).",
    )
    parser.add_argument(
        "--config",
        "-f",
        required=True,
        help="a DynamoGraphDeploymentRequest, its spec, or a profilingConfig.config (YAML/JSON)",
    )
    parser.add_argument(
        "--output-dir", "-o", default="profiling_results", help="where to write the results"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="rapid (default, or sweep.searchStrategy): the mocker's engine model in "
        "simulated time, seconds; thorough: deploy each candidate (see --deploy-target) and "
        "measure it with real HTTP load",
    )
    parser.add_argument(
        "--deploy-target",
        choices=DEPLOY_TARGETS,
        default="auto",
        help="where thorough deploys candidates: local (`dynamo serve` here; mocker DGDRs "
        "only), kubernetes (a trial DGD per candidate in the profiler's namespace); auto "
        "(default): kubernetes inside a pod (KUBERNETES_SERVICE_HOST set), else local",
    )
    parser.add_argument(
        "--serving-overhead",
        metavar="FIXED_MS[,PER_1K_TOKENS_MS]",
        default=None,
        help="rapid: what the serving stack adds to TTFT, per request and per 1000 prompt "
        f"tokens (default {MEASURED.fixed_ms:g},{MEASURED.per_1k_tokens_ms:g}, measured by "
        "benchmarks/profiler_overhead.py on the development machine; 0: the engine alone)",
    )
    parser.add_argument(
        "--deploy-closest",
        action="store_true",
        help="when no candidate meets the SLA, still write the fastest configuration (exit 0)",
    )
    return parser


def _measurer(request: ProfileRequest, deploy_target: str) -> Measurer:
    if request.mode == "rapid":
        return RapidMeasurer(request.serving_overhead)
    from dynamo.profiler.thorough import ThoroughMeasurer, resolve_target

    target = resolve_target(deploy_target, os.environ)
    how = "as trial DGDs" if target == "kubernetes" else "with dynamo serve"
    _log(f"thorough: deploying each candidate {how} (--deploy-target {target})")
    return ThoroughMeasurer(request, target)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a deleted or timed-out Job's pod) unwinds like Ctrl-C, so the deployed
    candidate is torn down."""
    raise KeyboardInterrupt


def _log(message: str) -> None:
    print(f"profiler: {message}", file=sys.stderr, flush=True)


def profile(request: ProfileRequest, out_dir: Path, deploy_target: str = "auto") -> int:
    started = time.monotonic()
    for note in request.ignored:
        _log(f"ignored: {note}")
    sla = request.sla
    _log(
        f"{request.model} ({request.backend}{', mocker' if request.use_mocker else ''}) on "
        f"{request.hardware.gpu_type}, {request.mode}: SLA TTFT {sla.ttft_ms:g} ms, ITL "
        f"{sla.itl_ms:g} ms at ISL {sla.isl}, OSL {sla.osl}"
    )
    if request.mode == "rapid":
        _log(f"rapid TTFT = the engine's + the serving stack's ({request.serving_overhead})")
    measurer = _measurer(request, deploy_target)
    try:
        bar = ProgressBar(sweep_points(request))
        sweep = sweep_candidates(request, measurer, bar)
        selection = select(sweep.prefill, sweep.decode, sla)
        if not selection.meets_sla:
            bar.finish()
            out_dir.mkdir(parents=True, exist_ok=True)
            doc = results_document(request, sweep, selection, time.monotonic() - started)
            (out_dir / RESULTS_FILE).write_text(json.dumps(doc, indent=1) + "\n")
            reason = f"no engine configuration meets the SLA: {selection.shortfall(sla)}"
            if not request.deploy_closest:
                _log(f"{reason} (--deploy-closest writes the fastest configuration anyway)")
                return EXIT_SLA_UNMET
            _log(f"{reason}; writing the fastest configuration (--deploy-closest)")
        p_tp, d_tp = selection.prefill.gpus, selection.decode.gpus
        bar.total += interpolation_points(request, p_tp, d_tp)
        prefill_profile = profile_prefill(request, measurer, p_tp, bar)
        decode_profile = profile_decode(request, measurer, d_tp, bar)
        bar.finish()
    finally:
        measurer.close()
    wall_s = time.monotonic() - started
    files = write_outputs(
        out_dir, request, sweep, selection, prefill_profile, decode_profile, wall_s
    )
    try:
        from dynamo.profiler.plots import write_plots

        files += write_plots(out_dir, sla, sweep, selection, prefill_profile, decode_profile)
    except MissingExtraError as exc:
        _log(f"no plots: {exc}")
    p, d = selection.prefill, selection.decode
    print(
        f"prefill TP{p.gpus}: TTFT {p.ttft_ms:.1f} ms, {p.thpt_per_gpu:.0f} tok/s/GPU; "
        f"decode TP{d.gpus} at concurrency {d.concurrency}: ITL {d.itl_ms:.1f} ms, "
        f"{d.thpt_per_gpu:.0f} tok/s/GPU ({request.mode}, {wall_s:.1f} s)"
    )
    print(f"wrote {len(files)} files to {out_dir}")
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m dynamo.profiler") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        overhead = (
            None
            if args.serving_overhead is None
            else parse_overhead(args.serving_overhead, "--serving-overhead")
        )
        request = load_request(args.config, mode=args.mode)
        if overhead is not None and request.mode != "rapid":
            raise DynamoError(
                "--serving-overhead is rapid mode's model of the serving stack; "
                "--mode thorough measures the stack itself"
            )
        if args.deploy_closest:
            request = dataclasses.replace(request, deploy_closest=True)
        if overhead is not None:
            request = dataclasses.replace(request, serving_overhead=overhead)
        signal.signal(signal.SIGTERM, _terminate)
        return profile(request, Path(args.output_dir), args.deploy_target)
    except DynamoError as exc:
        print(f"{prog}: {exc}".replace("\n", " "), file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # a bug: the trace for the log, then the one-line reason last
        traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
