"""Render a HF chat template (Jinja2, sandboxed) the way `apply_chat_template` does.

Same environment as transformers: immutable sandbox, `trim_blocks`/`lstrip_blocks`, the
`loopcontrols` extension, `raise_exception`, `strftime_now` and a `tojson` that keeps
non-ASCII text. A template that raises (e.g. "roles must alternate") is the client's fault.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dynamo.runtime.errors import ConfigError, InvalidRequestError


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """One compiled template plus the special tokens it may reference."""

    def __init__(self, source: str, *, bos_token: str | None, eos_token: str | None) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"invalid chat template: {exc}") from exc
        self._specials = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        context: dict[str, Any] = dict(extra) if extra else {}
        context.update(self._specials)
        context["messages"] = messages
        context["add_generation_prompt"] = add_generation_prompt
        if tools is not None:
            context["tools"] = tools
        try:
            return self._template.render(**context)
        except _TemplateRaised as exc:
            raise InvalidRequestError(f"Invalid conversation: {exc}", param="messages") from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise InvalidRequestError(
                f"The chat template could not render these messages: {exc}", param="messages"
            ) from None


def fallback_template() -> str:
    """For models without a template: one `role: content` line per message."""
    return (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
