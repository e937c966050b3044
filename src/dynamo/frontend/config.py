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
    tls_cert_path: str | None = option(None, help="TLS certificate (with --tls-key-path)")
    tls_key_path: str | None = option(None, help="TLS private key (with --tls-cert-path)")
    max_request_body_bytes: int = option(
        32 * 1024 * 1024, help="largest accepted HTTP request body, in bytes"
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
        if self.migration_limit < 0:
            raise ConfigError(f"--migration-limit {self.migration_limit}: expected >= 0")
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ConfigError("--tls-cert-path and --tls-key-path must be given together")
