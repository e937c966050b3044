"""The worker flags that name a model's output parsers; they travel in the model card.

Every worker entry point (mocker, vllm, sglang, trtllm) adds these with
`runtime.config.add_arguments`; an unknown name exits 2 listing the known ones (argparse's
choices for the flag, `resolve`'s check for the env var).
"""

from __future__ import annotations

import dataclasses

from dynamo.protocols.parsers.registry import REASONING_PARSER_NAMES, TOOL_CALL_PARSER_NAMES
from dynamo.runtime.config import option


@dataclasses.dataclass(frozen=True)
class ParserFlags:
    tool_call_parser: str | None = option(
        None,
        flag="--dyn-tool-call-parser",
        env="DYN_TOOL_CALL_PARSER",
        choices=TOOL_CALL_PARSER_NAMES,
        help="parse the model's tool-call markup into OpenAI tool_calls (docs/frontend.md)",
    )
    reasoning_parser: str | None = option(
        None,
        flag="--dyn-reasoning-parser",
        env="DYN_REASONING_PARSER",
        choices=REASONING_PARSER_NAMES,
        help="split the model's thinking into reasoning_content (docs/frontend.md)",
    )

    def card_fields(self) -> dict[str, str | None]:
        return {
            "tool_call_parser": self.tool_call_parser,
            "reasoning_parser": self.reasoning_parser,
        }
