"""msgpack of request messages whose long prompt is packed once for two requests.

A disaggregated request sends its prompt twice, the prefill leg and the decode leg, in two
requests that share the one `token_ids` list (about 0.17 ms of msgpack each at 8k tokens). The
bytes made here are exactly what one `pack(message)` makes: the wire does not change.
"""

from __future__ import annotations

from typing import Any

# A `token_ids` list at least this long is packed once and its bytes reused while the same list
# object is sent again; shorter ones cost less to pack than to splice.
REUSE_MIN_TOKEN_IDS = 512


class _PackedTokenIds:
    """The msgpack bytes of the last long `token_ids` list a request carried (one per process:
    the two legs of a disaggregated request go to different workers, so over different
    connections), as one tuple (list, its length, bytes) so a thread reads a consistent one.
    It holds the list itself, so its identity cannot pass to another list."""

    last: tuple[list[Any] | None, int, bytes] = (None, 0, b"")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def pack_message(pack: Any, message: list[Any], at: int) -> bytes:
    """`pack(message)`, byte for byte, where `message[at]` is a request; a long `token_ids`
    list that the previous such request sent too is not packed again. `pack` is a
    `msgpack.Packer(use_bin_type=True).pack`. The frontend never changes a sent prompt in
    place (a migrated request gets a new list); a caller that did would have to send a copy."""
    request = message[at]
    ids = request.get("token_ids") if type(request) is dict else None
    if type(ids) is not list or len(ids) < REUSE_MIN_TOKEN_IDS:
        return bytes(pack(message))
    last_ids, last_n, packed = _PackedTokenIds.last
    if last_ids is not ids or last_n != len(ids):
        packed = bytes(pack(ids))
        _PackedTokenIds.last = (ids, len(ids), packed)
    parts = [_array_header(len(message))]
    parts.extend(pack(item) for item in message[:at])
    parts.append(_map_header(len(request)))
    for key, value in request.items():
        parts.append(pack(key))
        parts.append(packed if value is ids else pack(value))
    parts.extend(pack(item) for item in message[at + 1 :])
    return b"".join(parts)
