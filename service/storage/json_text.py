"""JSON text as the JSON text columns store it (`models.JSONText`), encoded once.

A batched report stores each item's metrics twice: as its curve point's text and inside its
`trial_reported` event's payload. Encoding them once, and giving the event the curve's text
to embed as it is, halves that work; an `EncodedJSON` value is a column's stored text already,
which the many-row writes (`dialect.insert_rows`, `insert_new_rows`, `update_rows`) send as
it is instead of converting it again.
"""

from __future__ import annotations

import json
from typing import Any


class EncodedJSON(str):
    """The text a JSON text column stores for a value (`encode`): written as it is."""

    __slots__ = ()


# `models.JSONText` stores `json.dumps(value, separators=(",", ":"))`: the same encoder,
# built once instead of per call (NaN and the infinities kept as their tokens, non-ASCII
# escaped). tests/service/storage/test_json_text.py holds the two to the same text.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def encode(value: Any) -> EncodedJSON:
    """`value` as a JSON text column stores it."""
    return EncodedJSON(_ENCODE(value))


def encode_object(members: dict[str, Any]) -> EncodedJSON:
    """The JSON object of `members` (string keys, in order) as a JSON text column stores it;
    a member that is an `EncodedJSON` already goes in as its text, not encoded again."""
    for value in members.values():
        if type(value) is EncodedJSON:
            break
    else:
        return EncodedJSON(_ENCODE(members))
    # Stored text as it is; an int (an epoch, a trial number) has one JSON spelling.
    parts = [
        _key(key)
        + (
            value
            if type(value) is EncodedJSON
            else str(value)
            if type(value) is int
            else _ENCODE(value)
        )
        for key, value in members.items()
    ]
    return EncodedJSON("{" + ",".join(parts) + "}")


def _key(key: str) -> str:
    """A member's name and the colon, as the encoder writes them."""
    text = _KEYS.get(key)
    if text is None:
        text = _ENCODE(key) + ":"
        if len(_KEYS) < 256:  # the payloads' few member names
            _KEYS[key] = text
    return text


_KEYS: dict[str, str] = {}
