"""What every real-engine entry point checks before it loads a model."""

from __future__ import annotations

import pytest

from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError
from dynamo.worker.run import require_kv_transfer


def test_a_prefill_worker_is_refused_until_its_kv_transfer_is_wired() -> None:
    require_kv_transfer(WorkerRole.AGGREGATED)
    require_kv_transfer(WorkerRole.DECODE)
    with pytest.raises(ConfigError, match="needs this engine's KV transfer path, which is not"):
        require_kv_transfer(WorkerRole.PREFILL)
