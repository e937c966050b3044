"""A bootstrap-style prefill engine's address travels in its worker's model card."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dynamo.engines.base import EngineInfo
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.model_card import BootstrapAddress, ModelCard, WorkerRole
from dynamo.worker.model_card import build_model_card, read_tokenizer_facts


def test_the_card_of_a_prefill_worker_names_its_bootstrap_address() -> None:
    info = EngineInfo(
        kv_block_size=16,
        total_kv_blocks=100,
        context_length=512,
        bootstrap=BootstrapAddress(host="10.0.0.7", port=12345),
    )
    facts = read_tokenizer_facts(tiny_model_path())
    card = build_model_card("m", facts, info, role=WorkerRole.PREFILL)
    assert card.bootstrap == BootstrapAddress(host="10.0.0.7", port=12345)
    again = ModelCard.model_validate_json(card.model_dump_json())  # as discovery stores it
    assert again.bootstrap == card.bootstrap
    plain = build_model_card("m", facts, EngineInfo(16, 100, 512))
    assert plain.bootstrap is None


@pytest.mark.parametrize(("host", "port"), [("", 1), ("h", 0), ("h", 65536)])
def test_a_bad_bootstrap_address_is_refused(host: str, port: int) -> None:
    with pytest.raises(ValidationError):
        BootstrapAddress(host=host, port=port)
