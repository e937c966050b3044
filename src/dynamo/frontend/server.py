"""Assemble and run the frontend: model manager, serving, HTTP server; start and stop them.

`Frontend` takes a runtime (the real `DistributedRuntime` or a test double with the same
surface) and a policy factory, so the same code serves production and tests.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from dynamo.frontend.app import FrontendApp
from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.connections import CappedServer, connection_limit
from dynamo.frontend.disagg import DisaggRouter, DisaggSettings
from dynamo.frontend.disagg_metrics import DisaggMetrics
from dynamo.frontend.loop_lag import LoopLagMonitor
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_files import ModelFileFetcher
from dynamo.frontend.model_manager import ModelManager, PolicyFactory
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.serving import OpenAIServing
from dynamo.router.feeds import FeedRuntime

log = logging.getLogger(__name__)


class Frontend:
    """One OpenAI-compatible HTTP frontend over the models found through `runtime`."""

    def __init__(
        self,
        runtime: FeedRuntime,
        config: FrontendConfig,
        policy_factory: PolicyFactory,
        *,
        namespace: str | None,
        version: str = "0",
        use_kv_events: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self._reuse_port = reuse_port  # one of the `--num-http-workers` processes on the port
        self.metrics = FrontendMetrics(config.metrics_prefix)
        self.loop_lag = LoopLagMonitor(self.metrics.loop_lag.observe)
        self.preprocessors = PreprocessorCache(
            files=ModelFileFetcher(config.model_files_cache or None)
        )
        self.models = ModelManager(
            runtime,
            policy_factory,
            namespace=namespace,
            migration_limit=config.migration_limit,
            metrics=self.metrics,
            on_model_removed=self.preprocessors.forget,
            use_kv_events=use_kv_events,
        )
        self.serving = OpenAIServing(
            self.models,
            self.preprocessors,
            self.metrics,
            overload_status=config.overload_status_code,
            reasoning_field=config.reasoning_field_name,
            disagg=DisaggRouter(
                disagg_settings(config),
                DisaggMetrics(self.metrics, self.models.decode_index_blocks),
            ),
        )
        self.app = FrontendApp(
            self.serving,
            self.models,
            self.preprocessors,
            self.metrics,
            max_body_bytes=config.max_request_body_bytes,
            body_timeout_s=config.http_body_timeout_s,
            write_timeout_s=config.http_write_timeout_s,
            version=version,
            anthropic_api=config.enable_anthropic_api,
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self.config.http_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        scheme = "https" if self.config.tls_cert_path else "http"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> int:
        """Start watching discovery and serving HTTP; return the bound port."""
        await self.models.start()
        self.loop_lag.start()
        runner = web.AppRunner(
            self.app.build(),
            handler_cancellation=True,
            access_log=None,
            # aiohttp closes a connection that is idle, or still sending its request line and
            # headers, this long after it opened or its last response ended (slow loris)
            keepalive_timeout=self.config.http_keepalive_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        ssl_context = None
        if self.config.tls_cert_path and self.config.tls_key_path:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.config.tls_cert_path, self.config.tls_key_path)
        server = runner.server
        if server is None:
            raise RuntimeError("aiohttp runner has no server after setup")
        # our own listener (not web.TCPSite) so that connections past the cap are refused
        capped = CappedServer(server, connection_limit(self.config.http_max_connections))
        self._listener = await asyncio.get_running_loop().create_server(
            capped,
            self.config.http_host or None,
            self.config.http_port,
            ssl=ssl_context,
            backlog=1024,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
        what = "HTTP worker process" if self._reuse_port else "frontend"
        log.info("%s listening on %s (at most %d connections)", what, self.url, capped.limit)
        return self.port

    def connections(self) -> list[object]:
        """The client connections held now (aiohttp request handlers)."""
        server = self._runner.server if self._runner is not None else None
        return list(server.connections) if server is not None else []

    async def stop(self) -> None:
        await self.loop_lag.stop()
        if self._listener is not None:
            self._listener.close()  # stop accepting; the runner closes the connections
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.models.close()
        await self.preprocessors.close()


def disagg_settings(config: FrontendConfig) -> DisaggSettings:
    return DisaggSettings(
        enforce=config.enforce_disagg,
        conditional=config.router_conditional_disagg,
        max_local_prefill_tokens=config.disagg_max_local_prefill_tokens,
        max_prefill_queue=config.disagg_max_prefill_queue,
    )
