"""The spec's error vocabulary: how a broken rule becomes a pydantic error the user can read.

Every spec module reports through these helpers, so each message keeps the same `type`
(SPEC_ERROR_TYPE), a `loc` relative to the model being validated, and values shown as the user
wrote them in YAML.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

SPEC_ERROR_TYPE = "invalid_spec"
"""The pydantic error `type` of every rule the spec modules add to pydantic's own checks."""


@dataclass(frozen=True)
class Issue:
    """One broken rule: where (relative to the model being validated) and why."""

    loc: tuple[str | int, ...]
    msg: str
    input: Any = None
    type: str = SPEC_ERROR_TYPE


def invalid(msg: str) -> PydanticCustomError:
    """An error for the field being validated; the message is shown as is."""
    return PydanticCustomError(SPEC_ERROR_TYPE, msg)


def raise_issues(title: str, issues: Iterable[Issue]) -> None:
    """Raise every issue at once; pydantic prefixes each `loc` with the enclosing fields."""
    details = [
        InitErrorDetails(type=PydanticCustomError(i.type, i.msg), loc=i.loc, input=i.input)
        for i in issues
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def show(value: Any) -> str:
    """A value as the user wrote it in YAML: strings quoted, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def show_all(values: list[Any], most: int = 8) -> str:
    """Values for a message, the first `most` of them and an ellipsis for the rest."""
    shown = ", ".join(show(v) for v in values[:most])
    return shown + ", ..." if len(values) > most else shown


class Strict(BaseModel):
    """A spec section that refuses unknown keys, so a misspelt field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")
