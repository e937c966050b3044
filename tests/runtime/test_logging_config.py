"""`DYN_LOG` filter syntax and `DYN_LOGGING_JSONL` lines, on a real logging stack."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dynamo.runtime.errors import ConfigError
from dynamo.runtime.logging_config import TRACE, LogFilter, configure_logging, parse_log_filter
from dynamo.runtime.request_scope import request_scope

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    touched = ["dynamo.router", "dynamo_llm.kv_router", "dynamo.worker"]
    levels = {name: logging.getLogger(name).level for name in touched}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def test_parse_levels_and_targets() -> None:
    assert parse_log_filter("info") == LogFilter(logging.INFO, {})
    assert parse_log_filter("") == LogFilter(logging.INFO, {})
    assert parse_log_filter("WARN,dynamo_llm::kv_router=debug, dynamo.router=trace") == LogFilter(
        logging.WARNING, {"dynamo_llm.kv_router": logging.DEBUG, "dynamo.router": TRACE}
    )
    assert parse_log_filter("dynamo.worker=off").targets == {"dynamo.worker": logging.CRITICAL + 10}


def test_a_bad_level_names_the_directive() -> None:
    with pytest.raises(ConfigError) as err:
        parse_log_filter("info,dynamo.router=loud")
    assert str(err.value) == (
        "DYN_LOG: unknown level 'loud' in 'dynamo.router=loud' "
        "(use trace, debug, info, warn, error, off)"
    )


def test_jsonl_lines_carry_the_request_scope() -> None:
    out = io.StringIO()
    configure_logging(
        "frontend",
        env={"DYN_LOG": "warn,dynamo.router=debug", "DYN_LOGGING_JSONL": "1"},
        stream=out,
    )
    logging.getLogger("dynamo.router").debug("picked %s", "w1")
    logging.getLogger("dynamo.worker").info("dropped: below warn")
    with request_scope("req-1", TRACEPARENT):
        logging.getLogger("dynamo.worker").warning('slow "step"\nsecond line')
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("dynamo.router").exception("failed")

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["picked w1", 'slow "step"\nsecond line', "failed"]
    assert [r["level"] for r in records] == ["DEBUG", "WARNING", "ERROR"]
    assert {r["component"] for r in records} == {"frontend"}
    assert records[0]["target"] == "dynamo.router"
    assert records[0]["request_id"] is None and records[0]["trace_id"] is None
    assert records[1]["request_id"] == "req-1"
    assert records[1]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert records[1]["time"].endswith("+00:00")
    assert "ValueError: boom" in records[2]["exception"]


def test_text_lines_name_the_request() -> None:
    out = io.StringIO()
    configure_logging("worker", "info", env={}, stream=out)
    with request_scope("abc"):
        logging.getLogger("dynamo.worker").info("hello")
    logging.getLogger("dynamo.worker").info("bye")
    first, second = out.getvalue().splitlines()
    assert first.endswith(" INFO dynamo.worker: hello [request_id=abc]")
    assert second.endswith(" INFO dynamo.worker: bye")


def test_the_flag_beats_dyn_log() -> None:
    out = io.StringIO()
    parsed = configure_logging("router", "error", env={"DYN_LOG": "debug"}, stream=out)
    assert parsed.level == logging.ERROR
    assert logging.getLogger().level == logging.ERROR
