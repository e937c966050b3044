"""Label selectors of the fake API server, as a real API server reads them."""

from __future__ import annotations

import pytest

from dynamo.testing.kube_labels import SelectorError, parse_selector

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("env in (prod,staging)", True),
        ("env in (dev, staging)", False),
        ("env notin (dev,staging)", True),
        ("missing notin (a)", True),
        ("app=web,env in (prod),!missing", True),
        ("app=web,tier=back", False),
        ("example.com/role=front", False),
    ],
)
def test_selector_matches_like_the_api_server(selector: str, expected: bool) -> None:
    assert parse_selector(selector)(LABELS) is expected


def test_a_malformed_selector_is_an_error() -> None:
    with pytest.raises(SelectorError, match="unable to parse requirement: 'app in web'"):
        parse_selector("app in web")
