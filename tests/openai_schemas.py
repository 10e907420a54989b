"""Validate JSON against the official OpenAI API schemas (the fixture fixtures/openai_schemas.json).

The fixture is a verbatim copy of component schemas from ``openai/openai-openapi``
(``openapi.json``; repository and commit in its ``source`` field). That document is
OpenAPI 3.1 but still says ``nullable: true`` in places, a keyword JSON Schema ignores;
each such schema is read as ``anyOf: [schema, {"type": "null"}]``, as OpenAPI means it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openai_schemas.json"


def _nullable_as_any_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_as_any_of(v) for v in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _nullable_as_any_of(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _document() -> dict[str, Any]:
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return {"components": _nullable_as_any_of(doc["components"])}


def source() -> str:
    """Where the fixture's schemas come from (repository, file and commit)."""
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["source"]


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    doc = _document()
    if name not in doc["components"]["schemas"]:
        raise KeyError(f"{name} is not in {FIXTURE.name}")
    # The whole document is the schema; its root just points at one component, so that
    # "#/components/schemas/..." references resolve inside it.
    return jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"})


def errors(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks schema ``name`` (empty when it conforms)."""
    found = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def check(name: str, instance: Any) -> None:
    """Fail with the schema's complaints when ``instance`` does not conform to ``name``."""
    problems = errors(name, instance)
    assert not problems, f"not a valid {name}:\n" + "\n".join(problems[:20])
