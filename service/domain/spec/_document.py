"""Reading a spec document: YAML or JSON text into a plain mapping, before any validation.

Kept apart from the models so that a parse error (SpecDocumentError, with line and column) is
never mistaken for a spec that parses but breaks a rule (pydantic.ValidationError).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class SpecDocumentError(ValueError):
    """The text is not YAML/JSON, or its top level is not a mapping of spec fields."""


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 scalars (`1e-4` is a float; `yes`, `no`, `on`, `off`
    are strings), and refusing duplicate keys and aliases (which could blow up validation)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        self.flatten_mapping(node)
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_SpecLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_spec_document(text: str) -> dict[str, Any]:
    """Parse a spec written in YAML or JSON into a plain mapping (not yet validated).

    Raises SpecDocumentError, with the line and column where known, for text that does not
    parse, an empty document, or a top level that is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)
        raise SpecDocumentError(f"the spec is not valid YAML or JSON: {problem}") from exc
    if data is None:
        raise SpecDocumentError("the spec is empty")
    if not isinstance(data, dict):
        raise SpecDocumentError(
            "the spec must be a mapping of fields (name, strategy, space, workload, ...), "
            f"not a {type(data).__name__}"
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc)
