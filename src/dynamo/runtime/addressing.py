"""Endpoint addresses (`dyn://namespace.component.endpoint`) and instance ids."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass

from dynamo.runtime.errors import ConfigError

DEFAULT_NAMESPACE = "dynamo"
_SCHEME = "dyn://"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    """A load-balanced endpoint: every instance serving it is interchangeable."""

    namespace: str
    component: str
    endpoint: str

    @classmethod
    def parse(cls, text: str) -> EndpointAddress:
        """Parse `dyn://ns.component.endpoint` (the scheme is optional)."""
        body = text[len(_SCHEME) :] if text.startswith(_SCHEME) else text
        parts = body.split(".")
        if len(parts) != 3 or not all(_PART.match(p) for p in parts):
            raise ConfigError(
                f"invalid endpoint {text!r}: expected dyn://namespace.component.endpoint"
            )
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{_SCHEME}{self.namespace}.{self.component}.{self.endpoint}"

    @property
    def path(self) -> str:
        """The discovery key prefix of this endpoint's instances."""
        return f"{self.namespace}/{self.component}/{self.endpoint}"


def new_instance_id() -> int:
    """A random positive 63-bit id, unique per process (like an etcd lease id)."""
    return secrets.randbits(63) or 1


def default_namespace() -> str:
    return os.environ.get("DYN_NAMESPACE", DEFAULT_NAMESPACE)
