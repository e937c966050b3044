"""The bundled tiny model with a tool-aware chat template (Hermes / Qwen2.5 layout), for tests
of tool calling: tools are listed in the system turn inside `<tools>`, past calls are written
as `<tool_call>` blocks and tool results as `<tool_response>` in a user turn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dynamo.mocker.tinymodel import tiny_model_path

HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}You may call one or more functions. Signatures in <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Answer a call with <tool_call>{"name": ..., "arguments": ...}</tool_call>.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% elif m.role == 'assistant' %}<|im_start|>assistant
{% if m.content %}{{ m.content }}{% endif %}
{%- for call in m.tool_calls or [] %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def hermes_tiny_model(directory: Path) -> Path:
    """Copy the tiny model's files into `directory` with `HERMES_TEMPLATE`; return it."""
    src = Path(tiny_model_path())
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(src / name, directory / name)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["chat_template"] = HERMES_TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory
