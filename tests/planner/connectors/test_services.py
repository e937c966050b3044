"""Which service plays which planner role: subComponentType, then name, then the only worker."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo.planner.connectors import ConnectorSettings
from dynamo.planner.connectors.services import pick_services
from dynamo.runtime.errors import ConfigError

GRAPH = "DynamoGraphDeployment ns/g"
FRONTEND = {"componentType": "frontend"}
PLANNER = {"componentType": "planner"}


def _settings(**fields: Any) -> ConnectorSettings:
    return ConnectorSettings(environment="kubernetes", namespace="ns-g", graph_name="g", **fields)


def test_sub_component_type_wins_over_the_name() -> None:
    services = {
        "Frontend": FRONTEND,
        "Planner": PLANNER,
        "DecodeLooking": {"componentType": "worker", "subComponentType": "prefill"},
        "Other": {"componentType": "worker", "subComponentType": "decode"},
    }
    assert pick_services(services, _settings(), graph=GRAPH) == {
        "prefill": "DecodeLooking",
        "decode": "Other",
    }


def test_component_type_prefill_and_decode_count_as_sub_roles() -> None:
    services = {"P": {"componentType": "prefill"}, "D": {"componentType": "decode"}}
    assert pick_services(services, _settings(), graph=GRAPH) == {"prefill": "P", "decode": "D"}


def test_names_are_the_fallback() -> None:
    services = {
        "Frontend": FRONTEND,
        "VllmPrefillWorker": {"componentType": "worker"},
        "VllmDecodeWorker": {"componentType": "worker"},
    }
    assert pick_services(services, _settings(), graph=GRAPH) == {
        "prefill": "VllmPrefillWorker",
        "decode": "VllmDecodeWorker",
    }


def test_an_aggregated_planner_takes_the_only_worker() -> None:
    services = {
        "Frontend": FRONTEND,
        "Planner": PLANNER,
        "MockerWorker": {"componentType": "worker"},
    }
    chosen = pick_services(services, _settings(roles=("decode",)), graph=GRAPH)
    assert chosen == {"decode": "MockerWorker"}


def test_explicit_names_override_the_lookup() -> None:
    services = {"A": {"componentType": "worker"}, "B": {"componentType": "worker"}}
    settings = _settings(prefill_service="B", decode_service="A")
    assert pick_services(services, settings, graph=GRAPH) == {"prefill": "B", "decode": "A"}


def test_an_explicit_name_that_is_not_a_service_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        pick_services({"A": {}}, _settings(roles=("decode",), decode_service="Z"), graph=GRAPH)
    assert str(err.value) == f"{GRAPH}: the decode service 'Z' is not one of its services (A)"


def test_no_prefill_service_says_what_to_set() -> None:
    services = {"Frontend": FRONTEND, "MockerWorker": {"componentType": "worker"}}
    with pytest.raises(ConfigError) as err:
        pick_services(services, _settings(), graph=GRAPH)
    assert str(err.value) == (
        f"{GRAPH} has no service for the prefill role: set subComponentType: prefill on the "
        "worker service that does prefill (services: Frontend, MockerWorker)"
    )


def test_two_services_of_one_role_are_ambiguous() -> None:
    services = {
        "A": {"componentType": "worker", "subComponentType": "decode"},
        "B": {"componentType": "worker", "subComponentType": "decode"},
    }
    with pytest.raises(ConfigError) as err:
        pick_services(services, _settings(roles=("decode",)), graph=GRAPH)
    assert str(err.value) == (
        f"{GRAPH}: services A, B all match the decode role by subComponentType; "
        "give exactly one subComponentType: decode"
    )


def test_frontends_and_planners_never_play_a_role() -> None:
    services = {"DecodeFrontend": FRONTEND, "PrefillPlanner": PLANNER}
    with pytest.raises(ConfigError, match="no service for the prefill role"):
        pick_services(services, _settings(), graph=GRAPH)


def test_one_service_cannot_play_both_roles() -> None:
    services = {"W": {"componentType": "worker"}}
    settings = _settings(prefill_service="W", decode_service="W")
    with pytest.raises(ConfigError, match=r"one service \(W\) cannot be both"):
        pick_services(services, settings, graph=GRAPH)
