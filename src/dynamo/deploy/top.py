"""`dynamo top`: a terminal view over the frontends' and workers' `/metrics`, refreshing.

Targets: the `--frontend` URLs given, else a running `dynamo serve` graph's frontend, else one
on `DYN_HTTP_PORT` (8000); the `--worker` URLs given, else the graph's workers, else those
registered in discovery (`DYN_DISCOVERY_BACKEND`, `DYN_FILE_KV`, `DYN_NAMESPACE`).
Workers are found by their model cards: each card names the worker's status server, which
serves its `/metrics`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import aiohttp

from dynamo.deploy.state import find_run, live_runs, read_state
from dynamo.deploy.top_view import Samples, Scrape, parse_metrics, render
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.base import MODEL_CARDS_ROOT
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.errors import ConfigError

_CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class Targets:
    """What to scrape: frontend and worker base URLs, or the discovery to find workers in."""

    title: str
    frontends: tuple[str, ...]
    workers: tuple[str, ...] = ()
    discovery: RuntimeConfig | None = None


def find_targets(
    *,
    graph: str | None,
    run_dir: str | None,
    frontends: Sequence[str],
    workers: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> Targets:
    env = os.environ if env is None else env
    if workers:
        return Targets("dynamo top", tuple(frontends), tuple(workers))
    if frontends:
        return Targets("dynamo top", tuple(frontends), discovery=resolve(RuntimeConfig, {}, env))
    if graph or run_dir or live_runs():
        state = read_state(find_run(graph, Path(run_dir) if run_dir else None))
        config = resolve(
            RuntimeConfig,
            {
                "discovery_backend": "file",
                "file_kv_root": state.file_kv_root,
                "namespace": state.dynamo_namespace,
            },
            {},
        )
        return Targets(
            f"dynamo top: graph {state.graph}",
            (f"http://127.0.0.1:{state.http_port}",),
            discovery=config,
        )
    port = env.get("DYN_HTTP_PORT") or "8000"
    return Targets(
        "dynamo top", (f"http://127.0.0.1:{port}",), discovery=resolve(RuntimeConfig, {}, env)
    )


async def discover_workers(config: RuntimeConfig) -> list[str]:
    """Status-server URLs of the workers with a model card in `config`'s namespace."""
    discovery = make_discovery(config)
    await discovery.start()
    try:
        cards = await discovery.get_prefix(f"{MODEL_CARDS_ROOT}/{config.namespace}/")
    finally:
        await discovery.close()
    return sorted({str(c["files_url"]) for c in cards.values() if c.get("files_url")})


async def _scrape_one(session: aiohttp.ClientSession, url: str) -> Samples | None:
    try:
        async with session.get(url.rstrip("/") + "/metrics") as resp:
            if resp.status != 200:
                return None
            return parse_metrics(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def scrape(session: aiohttp.ClientSession, targets: Targets) -> Scrape:
    workers = list(targets.workers)
    if not workers and targets.discovery is not None:
        workers = await discover_workers(targets.discovery)
    urls = [*targets.frontends, *workers]
    results = await asyncio.gather(*(_scrape_one(session, u) for u in urls))
    n = len(targets.frontends)
    return Scrape(
        at_s=time.monotonic(),
        frontends=[r for r in results[:n] if r is not None],
        workers=[r for r in results[n:] if r is not None],
        unreachable=[u for u, r in zip(urls, results, strict=True) if r is None],
    )


async def run_top(
    targets: Targets,
    *,
    interval_s: float,
    frames: int | None,
    out: TextIO,
    clear: bool,
) -> int:
    """Print a frame every `interval_s` (`frames` of them, or until interrupted). Each frame
    covers the interval since the previous scrape. Exit status 1 if no frontend answered the
    last scrape."""
    timeout = aiohttp.ClientTimeout(total=max(1.0, min(interval_s, 5.0)))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        prev = await scrape(session, targets)
        shown = 0
        while frames is None or shown < frames:
            await asyncio.sleep(interval_s)
            cur = await scrape(session, targets)
            frame = render(prev, cur, title=targets.title)
            out.write((_CLEAR if clear else "") + frame + "\n")
            out.flush()
            prev, shown = cur, shown + 1
        return 0 if prev.frontends else 1


def top_main(
    *,
    graph: str | None,
    run_dir: str | None,
    frontends: Sequence[str],
    workers: Sequence[str],
    interval_s: float,
    once: bool,
) -> int:
    if interval_s <= 0:
        raise ConfigError(f"--interval must be > 0, got {interval_s}")
    targets = find_targets(graph=graph, run_dir=run_dir, frontends=frontends, workers=workers)
    targets = replace(targets, frontends=tuple(u.rstrip("/") for u in targets.frontends))
    clear = sys.stdout.isatty() and not once
    try:
        return asyncio.run(
            run_top(
                targets,
                interval_s=interval_s,
                frames=1 if once else None,
                out=sys.stdout,
                clear=clear,
            )
        )
    except KeyboardInterrupt:
        return 0
