"""`FrontendConfig`: the HTTP frontend's own settings (flags `--http-*`, `--migration-limit`, ...).

Router settings (`--router-mode`, thresholds, ...) live in the router's config and discovery
settings in `RuntimeConfig`; `frontend.main` combines the three into one parser.
"""

from __future__ import annotations

import dataclasses

from dynamo.frontend.model_files import default_cache_dir
from dynamo.runtime.config import option


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """How the OpenAI-compatible HTTP server listens, retries and reports."""

    http_host: str = option("0.0.0.0", help="address the HTTP server binds")
    http_port: int = option(8000, help="port the HTTP server binds")
    num_http_workers: int = option(
        0,
        help="frontend processes sharing the HTTP port (SO_REUSEPORT, Linux), each a full "
        "frontend; 0 = half the usable CPUs, 1 to 8 (docs/frontend.md#http-worker-processes)",
    )
    migration_limit: int = option(
        0, help="times a broken response stream may move to another worker (0 = off)"
    )
    overload_status_code: int = option(
        503,
        help="HTTP status when every worker is busy (503, or 529 like newer Dynamo)",
        env="DYN_HTTP_OVERLOAD_STATUS_CODE",
        choices=(503, 529),
    )
    metrics_prefix: str = option("dynamo_frontend", help="prefix of the Prometheus metric names")
    enable_anthropic_api: bool = option(
        False, help="serve Anthropic's POST /v1/messages (experimental, as in Dynamo)"
    )
    reasoning_field_name: str = option(
        "reasoning_content",
        help="response field of the reasoning a worker's --dyn-reasoning-parser splits off",
        choices=("reasoning_content", "reasoning"),
    )
    tls_cert_path: str | None = option(None, help="TLS certificate (with --tls-key-path)")
    tls_key_path: str | None = option(None, help="TLS private key (with --tls-cert-path)")
    max_request_body_bytes: int = option(
        32 * 1024 * 1024, help="largest accepted HTTP request body, in bytes"
    )
    # Hostile or broken clients: each is bounded (docs/frontend.md#hostile-clients).
    http_keepalive_timeout_s: float = option(
        75.0,
        help="seconds a connection may sit idle, or take to send a request's headers, before "
        "it is closed",
    )
    http_body_timeout_s: float = option(
        60.0,
        help="seconds a client may take to send a request body once its headers arrived (then 408)",
    )
    http_max_connections: int = option(
        0,
        help="most client connections held at once; more are answered 503 and closed "
        "(0 = the open-file limit less 1024)",
    )
    http_write_timeout_s: float = option(
        60.0,
        help="seconds a streaming response may wait for a client that does not read before the "
        "connection is dropped and the work upstream cancelled",
    )

    enforce_disagg: bool = option(
        False,
        help="while prefill workers are expected, answer 503 instead of serving a request "
        "aggregated on a decode worker when no prefill worker is up or its prefill failed",
    )
    router_conditional_disagg: bool = option(
        False,
        help="prefill on the decode worker when the prompt's uncached part is short or the "
        "prefill queue is long (needs --router-mode kv and decode workers' KV events)",
    )
    disagg_max_local_prefill_tokens: int = option(
        512,
        help="conditional disaggregation: prompts with at most this many tokens not cached on "
        "the chosen decode worker are prefilled there",
    )
    disagg_max_prefill_queue: int = option(
        4,
        help="conditional disaggregation: prefill on the decode worker once this many "
        "prefill requests per prefill worker are in flight",
    )

    model_files_cache: str = option(
        default_factory=default_cache_dir,
        help="directory caching the model files fetched from workers ('' = memory only)",
        env="DYN_MODEL_FILES_CACHE",
    )

    def __post_init__(self) -> None:
        from dynamo.runtime.errors import ConfigError

        if not 0 <= self.http_port < 65536:
            raise ConfigError(f"--http-port {self.http_port}: expected 0..65535 (0 = any free)")
        if self.num_http_workers < 0:
            raise ConfigError(
                f"--num-http-workers {self.num_http_workers}: expected >= 0 (0 = by the CPUs)"
            )
        if self.migration_limit < 0:
            raise ConfigError(f"--migration-limit {self.migration_limit}: expected >= 0")
        if self.http_max_connections < 0:
            raise ConfigError(f"--http-max-connections {self.http_max_connections}: expected >= 0")
        if self.max_request_body_bytes < 1:
            raise ConfigError("--max-request-body-bytes must be >= 1")
        for flag, seconds in (
            ("--http-keepalive-timeout-s", self.http_keepalive_timeout_s),
            ("--http-body-timeout-s", self.http_body_timeout_s),
            ("--http-write-timeout-s", self.http_write_timeout_s),
        ):
            if not seconds > 0:
                raise ConfigError(f"{flag} {seconds}: expected > 0 seconds")
        if self.disagg_max_local_prefill_tokens < 0:
            raise ConfigError("--disagg-max-local-prefill-tokens must be >= 0")
        if self.disagg_max_prefill_queue < 1:
            raise ConfigError("--disagg-max-prefill-queue must be >= 1")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigError("--tls-cert-path and --tls-key-path must be given together")
