"""Which models exist and which workers serve them, from model-card discovery events.

Pure bookkeeping: `ModelRegistry.apply` takes one watch event on `v1/mdc/{ns}/{comp}/{ep}/{id:x}`
and returns what changed. A model exists from its first worker's card to its last one's
deletion; its configuration (context length, block size, ...) is its first worker's card.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.discovery.base import MODEL_CARDS_ROOT, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    instance_id: int
    address: EndpointAddress
    card: ModelCard

    @property
    def is_prefill(self) -> bool:
        return self.card.role == WorkerRole.PREFILL


ChangeKind = Literal["model_added", "model_removed", "worker_added", "worker_removed"]


@dataclass(frozen=True, slots=True)
class RegistryChange:
    kind: ChangeKind
    model: str
    worker: WorkerEntry | None = None


class ModelEntry:
    """One served model name and its workers, in registration order."""

    __slots__ = ("name", "workers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.workers: dict[int, WorkerEntry] = {}

    @property
    def card(self) -> ModelCard:
        return next(iter(self.workers.values())).card

    def serves(self, model_type: str) -> bool:
        """Whether the model's card lists `model_type` (chat, completions, embedding)."""
        return model_type in self.card.model_types

    def cards(self) -> list[ModelCard]:
        """Every worker's card (any of them may serve the model's files)."""
        return [w.card for w in self.workers.values()]


def parse_card_key(key: str) -> tuple[EndpointAddress, int] | None:
    """`v1/mdc/ns/comp/ep/{id:x}` -> (address, instance id); None if it is not such a key."""
    parts = key.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != MODEL_CARDS_ROOT:
        return None
    try:
        return EndpointAddress(parts[2], parts[3], parts[4]), int(parts[5], 16)
    except ValueError:
        return None


class ModelRegistry:
    """Model name -> workers, kept in step with the model-card watch."""

    def __init__(self) -> None:
        self._models: dict[str, ModelEntry] = {}
        self._by_key: dict[str, tuple[str, int]] = {}  # card key -> (model, instance id)

    def get(self, name: str) -> ModelEntry | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    def entries(self) -> list[ModelEntry]:
        return list(self._models.values())

    def apply(self, event: WatchEvent) -> list[RegistryChange]:
        parsed = parse_card_key(event.key)
        if parsed is None:
            log.debug("ignoring non-model-card key %s", event.key)
            return []
        if event.kind == "delete" or event.value is None:
            return self._remove(event.key)
        address, instance_id = parsed
        try:
            card = ModelCard.model_validate(event.value)
        except ValidationError as exc:
            log.warning("ignoring invalid model card at %s: %s", event.key, exc)
            return self._remove(event.key)
        changes: list[RegistryChange] = []
        previous = self._by_key.get(event.key)
        if previous is not None and previous[0] != card.name:
            changes += self._remove(event.key)  # the instance now serves another name
        entry = self._models.get(card.name)
        if entry is None:
            entry = self._models[card.name] = ModelEntry(card.name)
            changes.append(RegistryChange("model_added", card.name))
        worker = WorkerEntry(instance_id, address, card)
        is_new = instance_id not in entry.workers
        entry.workers[instance_id] = worker
        self._by_key[event.key] = (card.name, instance_id)
        if is_new:
            changes.append(RegistryChange("worker_added", card.name, worker))
        return changes

    def _remove(self, key: str) -> list[RegistryChange]:
        found = self._by_key.pop(key, None)
        if found is None:
            return []
        name, instance_id = found
        entry = self._models[name]
        worker = entry.workers.pop(instance_id)
        changes = [RegistryChange("worker_removed", name, worker)]
        if not entry.workers:
            del self._models[name]
            changes.append(RegistryChange("model_removed", name))
        return changes
