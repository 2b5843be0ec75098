"""`snakemake --config` overrides, typed by the config schema before it validates them.

Snakemake parses a top-level `--config key=value` as a number or boolean where it can, but
the values inside a nested one (`--config 'guard={llama_guard: {enabled: false}}'`) come from
YAML's BaseLoader, which keeps every scalar a string: the schema would then reject `'false'`
for a boolean. `coerce_overrides` reads each such string as YAML would (`false`, `12`, `0.5`,
`1e-3`, `null`) wherever the schema's declared type at that key allows the result, and leaves
it a string otherwise, so a string field such as `judge: substring` stays a string and a real
type error still fails validation, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

_JSON_TYPES = {
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def coerce_overrides(config: dict, overrides: Mapping, schema) -> list[str]:
    """Retype in `config` (in place) the string scalars that came from `overrides` (Snakemake's parsed
    `--config` dict) where `schema` (a dict, or the path of the schema YAML) declares another type.

    Returns the dotted keys changed, e.g. `['guard.llama_guard.enabled']`.
    """
    if not isinstance(schema, dict):
        with open(schema, encoding="utf-8") as f:
            schema = yaml.safe_load(f)
    changed: list[str] = []
    for key, value in (overrides or {}).items():
        sub = _resolve(_child(schema, key, schema), schema)
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "[") and _types(sub) & {"object", "array"}:
            try:  # Snakemake keeps a value it cannot parse as one string; the schema would only say "not an object"
                yaml.safe_load(value)  # a syntax error is the same for every loader
            except yaml.YAMLError as e:
                problem = str(getattr(e, "problem", None) or e).strip()
                raise ValueError(f"--config {key}={value}: not valid YAML ({problem}); "
                                 "quote strings that hold ':', '?', '#', ',' or brackets, e.g. \"Is it harmful?\"") from None
        if key in config:
            config[key] = _coerce(config[key], value, _child(schema, key, schema), schema, key, changed)
    return changed


def _coerce(current, override, sub, root, where, changed):
    """`current` (the merged value) retyped where it came from `override` and `sub` allows it."""
    sub = _resolve(sub, root)
    if isinstance(current, dict) and isinstance(override, Mapping):
        for k, v in override.items():
            if k in current:
                current[k] = _coerce(current[k], v, _child(sub, k, root), root, f"{where}.{k}", changed)
        return current
    if isinstance(current, list) and isinstance(override, list):
        items = _resolve((sub or {}).get("items"), root)
        return [_coerce(x, x, items, root, f"{where}[{i}]", changed) for i, x in enumerate(current)]
    if isinstance(current, str) and current == override:
        new = _scalar(current, _types(sub))
        if new is not current:
            changed.append(where)
            return new
    return current


def _scalar(text: str, types: set[str]):
    """`text` as YAML reads it, when that gives a type in `types` other than string; else `text` itself."""
    if not types or types <= {"string"}:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and "number" in types:  # PyYAML reads 1e-3 (no dot) as a string
        try:
            value = float(text)
        except ValueError:
            return text
    for t in types - {"string"}:
        if isinstance(value, _JSON_TYPES.get(t, ())) and not (isinstance(value, bool) and t in ("integer", "number")):
            return value
    return text


def _types(sub) -> set[str]:
    t = (sub or {}).get("type")
    return set(t) if isinstance(t, list) else {t} if isinstance(t, str) else set()


def _child(sub, key, root):
    """The schema of `key` inside object schema `sub` (properties, then additionalProperties)."""
    sub = _resolve(sub, root) or {}
    props = sub.get("properties") or {}
    if key in props:
        return props[key]
    extra = sub.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _resolve(sub, root):
    """Follow local `$ref`s (`#/definitions/name`, `#/properties/steering/definitions/arms`)."""
    seen = 0
    while isinstance(sub, dict) and "$ref" in sub and seen < 20:
        ref = sub["$ref"]
        if not ref.startswith("#/"):
            return None
        node = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        sub, seen = node, seen + 1
    return sub
