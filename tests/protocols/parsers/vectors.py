"""Test vectors per tool-call family, written from each model's documented output format.

Each vector: (family, model output, expected content, expected calls as (name, arguments)).
"""

from __future__ import annotations

from typing import Any

Calls = list[tuple[str, dict[str, Any]]]
NESTED = {"filter": {"tags": ["a", "b"], "range": {"lo": 1, "hi": 2.5}}, "q": "café ☕ 東京"}
NESTED_JSON = '{"filter": {"tags": ["a", "b"], "range": {"lo": 1, "hi": 2.5}}, "q": "café ☕ 東京"}'
WEATHER = {"city": "Paris", "unit": "celsius"}

# DeepSeek's markers spelled out by hand (fullwidth bar U+FF5C, U+2581 for spaces)
DS_B, DS_E = "<\uff5ctool\u2581calls\u2581begin\uff5c>", "<\uff5ctool\u2581calls\u2581end\uff5c>"
DC_B = "<\uff5ctool\u2581call\u2581begin\uff5c>"
DC_E, DS_SEP = "<\uff5ctool\u2581call\u2581end\uff5c>", "<\uff5ctool\u2581sep\uff5c>"

VECTORS: list[tuple[str, str, str, Calls]] = [
    # --- hermes -------------------------------------------------------------------------
    ("hermes", "The capital is Paris.", "The capital is Paris.", []),
    (
        "hermes",
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "search", "arguments": ' + NESTED_JSON + "}\n</tool_call>\n",
        "Let me check.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        "",
        [("get_weather", {"city": "Paris"})],
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call> done',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call> done',
        [],
    ),
    ("hermes", "a < b <tool_c and <tool_call", "a < b <tool_c and <tool_call", []),
    # --- llama3_json --------------------------------------------------------------------
    (
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": '
        '"celsius"}}; {"name": "search", "parameters": ' + NESTED_JSON + "}",
        "",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "llama3_json",
        ' {"name": "search", "parameters": ' + NESTED_JSON + "}",
        "",
        [("search", NESTED)],
    ),
    ("llama3_json", '{"answer": 42}', '{"answer": 42}', []),
    ("llama3_json", "Paris is {big}.", "Paris is {big}.", []),
    # --- mistral ------------------------------------------------------------------------
    (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
        '"celsius"}}, {"name": "search", "arguments": ' + NESTED_JSON + "}]",
        "",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "mistral",
        'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}'
        "[TOOL_CALLS]search[ARGS]" + NESTED_JSON,
        "Sure.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    ("mistral", "[TOOL_CALLS] [{oops", "[TOOL_CALLS] [{oops", []),
    # --- pythonic -----------------------------------------------------------------------
    (
        "pythonic",
        '[get_weather(city="Paris", unit="celsius"), search(filter={"tags": ["a", "b"], '
        '"range": {"lo": 1, "hi": 2.5}}, q="café ☕ 東京")]',
        "",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "pythonic",
        'Checking.<|python_start|>[get_weather(city="Paris", unit="celsius")]<|python_end|>',
        "Checking.",
        [("get_weather", WEATHER)],
    ),
    ("pythonic", "[1] is a citation.", "[1] is a citation.", []),
    ("pythonic", "[get_weather(city=os.environ)]", "[get_weather(city=os.environ)]", []),
    # --- qwen3_coder ----------------------------------------------------------------------
    (
        "qwen3_coder",
        "I'll look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
        "</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=search>\n<parameter=filter>\n"
        '{"tags": ["a", "b"], "range": {"lo": 1, "hi": 2.5}}\n</parameter>\n'
        "<parameter=q>\ncafé ☕ 東京\n</parameter>\n</function>\n</tool_call>",
        "I'll look.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "qwen3_coder",
        "<tool_call>\n<function=get_weather>\n<parameter=city>Paris</function>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>Paris</function>\n</tool_call>",
        [],
    ),
    # --- deepseek_v3 ----------------------------------------------------------------------
    (
        "deepseek_v3",
        f"{DS_B}{DC_B}function{DS_SEP}get_weather\n```json\n"
        '{"city": "Paris", "unit": "celsius"}\n```'
        f"{DC_E}\n{DC_B}function{DS_SEP}search\n```json\n{NESTED_JSON}\n```{DC_E}{DS_E}",
        "",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "deepseek_v3",
        f"{DS_B}{DC_B}function{DS_SEP}get_weather\n{{bad}}{DC_E}{DS_E}",
        f"{DC_B}function{DS_SEP}get_weather\n{{bad}}{DC_E}",
        [],
    ),
    # --- deepseek_v3_1 ----------------------------------------------------------------------
    (
        "deepseek_v3_1",
        f"Looking.{DS_B}{DC_B}get_weather{DS_SEP}"
        '{"city": "Paris", "unit": "celsius"}'
        f"{DC_E}{DC_B}search{DS_SEP}{NESTED_JSON}{DC_E}{DS_E}",
        "Looking.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "deepseek_v3_1",
        f"{DS_B}{DC_B}get_weather{{}}{DC_E}{DS_E}",
        f"{DC_B}get_weather{{}}{DC_E}",
        [],
    ),
    # --- harmony ----------------------------------------------------------------------
    (
        "harmony",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city": "Paris", "unit": "celsius"}<|call|>'
        "<|start|>assistant to=functions.search<|channel|>commentary json<|message|>" + NESTED_JSON,
        "",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "harmony",
        "<|channel|>commentary to=functions.get_weather<|message|>{nope<|call|>",
        "<|channel|>commentary to=functions.get_weather<|message|>{nope<|call|>",
        [],
    ),
    # --- kimi_k2 ----------------------------------------------------------------------
    (
        "kimi_k2",
        "Let me see.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.search:1<|tool_call_argument_begin|>"
        + NESTED_JSON
        + "<|tool_call_end|><|tool_calls_section_end|>",
        "Let me see.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "kimi_k2",
        "<|tool_calls_section_begin|><|tool_call_begin|>get_weather<|tool_call_end|>",
        "<|tool_call_begin|>get_weather<|tool_call_end|>",
        [],
    ),
    # --- glm45 ----------------------------------------------------------------------
    (
        "glm45",
        "Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
        "</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n</tool_call>"
        "\n<tool_call>search\n<arg_key>filter</arg_key>\n<arg_value>"
        '{"tags": ["a", "b"], "range": {"lo": 1, "hi": 2.5}}</arg_value>\n'
        "<arg_key>q</arg_key>\n<arg_value>café ☕ 東京</arg_value>\n</tool_call>",
        "Checking.",
        [("get_weather", WEATHER), ("search", NESTED)],
    ),
    (
        "glm45",
        "<tool_call>get_weather\n<arg_key>city</arg_key>Paris\n</tool_call>",
        "<tool_call>get_weather\n<arg_key>city</arg_key>Paris\n</tool_call>",
        [],
    ),
]
