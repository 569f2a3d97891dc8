"""JSON text encoded once (`service.storage.json_text`): the same text the JSON text columns
store, and an object embedding a member's stored text reads back as the object itself."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from service.storage import json_text
from service.storage.models import EventRow

ODD: dict[str, Any] = {
    "val_accuracy": math.nan,
    "größe \u2713": math.inf,
    'quote"back\\slash': -0.0,
    "low": -math.inf,
    "tiny": 5e-324,
    "big": 1e308,
}


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=str)
@pytest.mark.parametrize(
    "value", [ODD, {"number": 3, "epoch": 1, "metrics": ODD}, [0.5, math.nan], "t\u00e9xt", 7]
)
def test_encode_is_the_columns_own_text(dialect: Any, value: Any) -> None:
    """The column type's own conversion (what the ORM stores) and `encode` give one text."""
    column = EventRow.__table__.c.payload.type
    assert json_text.encode(value) == column.dialect_impl(dialect).bind_processor(dialect)(value)


def test_an_object_embedding_stored_text_is_the_object_encoded() -> None:
    """A member given as stored text (a curve point's metrics) is embedded as it is: the
    object's text is the one of the object with the metrics themselves, keys in order."""
    embedded = json_text.encode_object(
        {"number": 12, "epoch": 3, "metrics": json_text.encode(ODD), "note": "x\u2713"}
    )
    plain = {"number": 12, "epoch": 3, "metrics": ODD, "note": "x\u2713"}
    assert embedded == json_text.encode(plain)
    back = json.loads(embedded)
    assert list(back) == ["number", "epoch", "metrics", "note"]
    assert math.isnan(back["metrics"]["val_accuracy"]) and back["metrics"]["low"] == -math.inf


def test_stored_text_is_not_encoded_again_when_not_a_member() -> None:
    """Plain strings stay strings: only `EncodedJSON` is taken as text already, and an
    object without such a member is one plain encoding (a bool stays a bool)."""
    assert json_text.encode_object({"metrics": '{"x":1}'}) == '{"metrics":"{\\"x\\":1}"}'
    assert json_text.encode_object({"flag": True, "n": 2}) == '{"flag":true,"n":2}'
    mixed = {"flag": True, "metrics": json_text.encode({"x": 1})}
    assert json_text.encode_object(mixed) == '{"flag":true,"metrics":{"x":1}}'
