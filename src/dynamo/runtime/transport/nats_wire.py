"""Wire format of the NATS request plane: subjects, message kinds and their encoding.

A served name `ns/component/endpoint/{id:x}` listens on the request subject
`dynamo_rpc.ns.component.endpoint-{id:x}` (the prefix keeps request traffic out of the
event plane's `ns.component.>` subscriptions) and on its control subject `<request>.ctl`.

  caller → server, on the request subject, with a unique reply inbox:
      [name, request_id, body, window_frames, keepalive_s]
  server → caller, on the inbox:
      DATA [2, body]   ERROR [3, kind, message]   FINAL [4]   KEEPALIVE [5]
  caller → server, on the control subject:
      CANCEL [1, inbox]   CREDIT [6, inbox, frames]

Every stream ends with exactly one FINAL or ERROR. The server sends at most `window_frames`
DATA messages beyond what the caller has credited back, and a KEEPALIVE after every
`keepalive_s` without a message, so a caller that hears nothing for a few intervals knows
the stream broke.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from dynamo.runtime.errors import ConfigError, TransportError
from dynamo.runtime.transport.packing import pack_message

CANCEL, DATA, ERROR, FINAL, KEEPALIVE, CREDIT = 1, 2, 3, 4, 5, 6
SUBJECT_PREFIX = "dynamo_rpc"
ADDRESS_SCHEME = "nats:"
MISSED_KEEPALIVES = 3  # the caller gives up after this many keepalive intervals of silence
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

_packer = msgpack.Packer(use_bin_type=True)


class PayloadTooLargeError(TransportError):
    """A message does not fit the NATS server's `max_payload` (not worth retrying)."""


def subject_for(name: str) -> str:
    """The request subject of served `name` (`ns/comp/ep/{id:x}` → `dynamo_rpc.ns.comp.ep-id`)."""
    parts = name.split("/")
    if not all(_TOKEN.match(p) for p in parts):
        raise ConfigError(
            f"request-plane name {name!r} cannot be a NATS subject: "
            "use '/'-separated parts of letters, digits, '_' and '-'"
        )
    if len(parts) == 4:
        namespace, component, endpoint, instance = parts
        return f"{SUBJECT_PREFIX}.{namespace}.{component}.{endpoint}-{instance}"
    return ".".join((SUBJECT_PREFIX, *parts))


def control_subject(subject: str) -> str:
    return f"{subject}.ctl"


def address_for(subject: str) -> str:
    """The request-plane address a caller passes to reach `subject` (`nats:<subject>`)."""
    return f"{ADDRESS_SCHEME}{subject}"


def subject_of_address(address: str) -> str:
    """`nats:<subject>` (or a bare subject) → the subject."""
    subject = address.removeprefix(ADDRESS_SCHEME)
    if not subject or any(c.isspace() or c in "*>" for c in subject):
        raise TransportError(f"bad NATS request-plane address {address!r}: expected nats:<subject>")
    return subject


def encode(message: list[Any], max_payload: int, what: str, *, request_at: int = -1) -> bytes:
    """msgpack of `message`; TransportError if unencodable or over NATS' `max_payload`.
    `request_at`: the index of a request in `message`, whose long prompt is packed once for
    both legs of a disaggregated request (`packing.pack_message`)."""
    try:
        if request_at >= 0:
            data = pack_message(_packer.pack, message, request_at)
        else:
            data = _packer.pack(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TransportError(f"{what} not encodable as msgpack: {exc}") from exc
    if len(data) > max_payload:
        raise PayloadTooLargeError(
            f"{what} of {len(data)} bytes exceeds the NATS server's max_payload of "
            f"{max_payload} bytes (raise max_payload in the NATS server config)"
        )
    return data


def decode(data: bytes) -> list[Any] | None:
    """The message array in `data`, or None if it is not a non-empty msgpack array."""
    try:
        message = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    return message if type(message) is list and message else None
