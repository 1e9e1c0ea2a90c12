"""docs/configuration.md, generated from the workflow's config schema.

    uv run python -m atlas.config_docs            # (re)write docs/configuration.md
    uv run python -m atlas.config_docs --check    # exit 1 if it is not what the schema gives

The schema (`workflow/schemas/config.schema.yaml`) is the one definition of the workflow's
config: every key with its type, default, allowed values and description. This module renders it
as a markdown page, one section per top-level key and one table row per key, nested keys by their
dotted path (`classifier.name`, `filters[].layer`). A definition shared by several keys (every
method's entry under `methods`) is listed once, under a placeholder named after the definition
(`methods.<method>.classes_per_job`); a definition used by one key is listed under that key's path.

No torch: this runs in the lint step and in a test.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from atlas.io import write_text
from atlas.methods import schema_methods

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path("workflow/schemas/config.schema.yaml")
OUT = Path("docs/configuration.md")
REGENERATE = "uv run python -m atlas.config_docs"

_HEADER = """\
# Configuration

<!-- Generated from {schema} by `{regenerate}`: edit the schema, not this file. -->

Generated from `{schema}`. After changing the schema, regenerate this page with

    {regenerate}

(`{regenerate} --check` says whether it is current; a test checks it too).

{description}

A run's config is `config.yaml` (the embedded default), the Snakefile's own config file.
`--configfile FILE` is merged over it: FILE's keys override those of `config.yaml`, nested keys
one by one, and keys that FILE does not name keep `config.yaml`'s values (Snakemake's
`--replace-workflow-config` starts from FILE alone instead); `--config KEY=VALUE` overrides single
keys. Keys that no file names take the defaults below. Before any job runs, the workflow
validates the config against the schema and fills in the defaults; a misspelt key, a value of the
wrong type or out of range, a class index outside 0..999 or a missing dataset folder stops it
with a one-line message. The resolved config (defaults filled in) and its sha256 are recorded in
the index's provenance.

A key written with a placeholder, such as `methods.<method>.classes_per_job`, exists under each of the
keys listed just before it (`methods.scratch.classes_per_job`, `methods.pretrained.classes_per_job`, ...).
`filters[].layer` is the `layer` of each entry of the list `filters`. The profiles are in
`workflow/profiles/` (docs/design.md, "Profiles").
"""


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    default: str
    allowed: str
    description: str


def load_schema(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    if not isinstance(schema, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return schema


def _text(value: Any) -> str:
    """A description as one line (folded YAML keeps a trailing newline)."""
    return " ".join(str(value or "").split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _types(node: Mapping[str, Any]) -> list[str]:
    t = node.get("type")
    if t is None:
        if "anyOf" in node:
            return [name for option in node["anyOf"] for name in _types(option)]
        return []
    return list(t) if isinstance(t, list) else [t]


def _type(node: Mapping[str, Any]) -> str:
    names = _types(node)
    if "array" in names and "items" in node:
        inner = " or ".join(dict.fromkeys(_types(node["items"]))) or "items"
        names = [f"array of {inner}" if n == "array" else n for n in names]
    return " or ".join(dict.fromkeys(names)) or "any"


def _bounds(node: Mapping[str, Any]) -> list[str]:
    out = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            out.append(f"{sign} {node[key]}")
    return out


def _allowed(node: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(_literal(v) for v in node["enum"]))
    bounds = _bounds(node)
    if bounds:
        parts.append(", ".join(bounds))
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if node.get("minLength") == 1:
        parts.append("not empty")
    elif "minLength" in node:
        parts.append(f"at least {node['minLength']} characters")
    if "minItems" in node or "maxItems" in node:
        lo, hi = node.get("minItems"), node.get("maxItems")
        if lo is not None and lo == hi:
            parts.append(f"exactly {lo} items")
        elif lo is not None and hi is not None:
            parts.append(f"{lo} to {hi} items")
        elif lo is not None:
            parts.append(f"at least {lo} item" + ("s" if lo != 1 else ""))
        else:
            parts.append(f"at most {hi} items")
    items = node.get("items")
    if isinstance(items, Mapping) and "properties" not in items:
        options = items.get("anyOf", [items])
        inner = [" ".join(filter(None, [_type(o), _allowed(o)])) for o in options]
        inner = [i for i in inner if i]
        if inner:
            parts.append("each " + " or ".join(inner))
    if node.get("additionalProperties") is False and "properties" in node:
        parts.append("only the keys below")
    return "; ".join(parts) or "–"


def _default(node: Mapping[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return "–"
    value = node["default"]
    if value == {} and "properties" in node:
        return "its keys' defaults"
    return _literal(value)


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """The node with its $ref's definition merged under it (the node's own keys win), and the
    definition's name (None without a $ref)."""
    ref = node.get("$ref")
    if ref is None:
        return node, None
    # A definition (#/$defs/NAME), or a top-level key whose keys another key repeats
    # (#/properties/NAME: `compare.classifier` is a second `classifier`).
    prefix = "#/$defs/" if str(ref).startswith("#/$defs/") else "#/"
    if not str(ref).startswith(prefix) or ref[len(prefix) :] not in defs:
        raise ValueError(f"unresolvable $ref {ref!r}")
    name = ref[len(prefix) :]
    merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return merged, name


def _rows(node: Mapping[str, Any], path: str, defs: Mapping[str, Any], required: bool = False) -> Iterator[Row]:
    """`node`'s row and those of every key under it, in schema order."""
    yield Row(path, _type(node), _default(node, required), _allowed(node), _text(node.get("description")))
    yield from _children(node, path, defs)


def _children(node: Mapping[str, Any], path: str, defs: Mapping[str, Any]) -> Iterator[Row]:
    """The rows of the keys under `node` (its properties, and those of its array items)."""
    props: Mapping[str, Any] = node.get("properties", {})
    needed = set(node.get("required", ()))
    # A definition that several keys of this object share is listed once, after those keys.
    refs = [p.get("$ref") for p in props.values() if "$ref" in p]
    shared = {r for r in refs if refs.count(r) > 1}
    placeholders: dict[str, Mapping[str, Any]] = {}
    for name, child in props.items():
        child_path = f"{path}.{name}" if path else name
        merged, def_name = _resolve(child, defs)
        if def_name is not None and child["$ref"] in shared:
            yield Row(child_path, _type(merged), _default(merged, name in needed), "–", _text(child.get("description")))
            placeholders.setdefault(f"{path}.<{def_name}>" if path else f"<{def_name}>", defs[def_name])
            continue
        yield from _rows(merged, child_path, defs, name in needed)
    for placeholder, definition in placeholders.items():
        yield from _children(definition, placeholder, defs)
    items = node.get("items")
    if isinstance(items, Mapping) and "properties" in items:
        yield from _children(items, f"{path}[]", defs)


def rows(schema: Mapping[str, Any]) -> list[Row]:
    """Every key of the schema, nested keys by dotted path, in schema order."""
    return list(_children(schema, "", _definitions(schema)))


def _definitions(schema: Mapping[str, Any]) -> dict[str, Any]:
    """What a $ref may name: the definitions, and the top-level keys as properties/NAME."""
    return {**schema.get("$defs", {}), **{f"properties/{k}": v for k, v in schema.get("properties", {}).items()}}


def render(schema: Mapping[str, Any], schema_path: Path = SCHEMA) -> str:
    """The markdown page: the header, then one section per top-level key."""
    out = [
        _HEADER.format(
            schema=schema_path.as_posix(), regenerate=REGENERATE, description=_text(schema.get("description"))
        )
    ]
    defs = _definitions(schema)
    for name, child in schema.get("properties", {}).items():
        merged, _ = _resolve(child, defs)
        out.append(f"## `{name}`\n")
        section = list(_rows(merged, name, defs))
        if "properties" in merged:
            # An object: its description opens the section, its keys fill the table.
            out.append(_text(merged.get("description")) + "\n")
            section = section[1:]
        out.append("| key | type | default | allowed | description |")
        out.append("|---|---|---|---|---|")
        for row in section:
            cells = (f"`{row.path}`", row.type, row.default, row.allowed, row.description or "–")
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def generate(root: Path = ROOT) -> str:
    return render(schema_methods(load_schema(root / SCHEMA)))  # every registered method under `methods`


def main(argv: Sequence[str] | None = None) -> int:
    """`[--check] [--root DIR]`: write the page, or with `--check` exit 1 (one line on stderr) if it
    is not current. A developer's tool, not a stage: two flags, read by hand."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    root = ROOT
    if "--root" in args:
        at = args.index("--root")
        if at + 1 >= len(args):
            print("--root needs a folder: the repository root", file=sys.stderr)
            return 2
        root = Path(args[at + 1])
        del args[at : at + 2]
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(f"unknown argument(s) {' '.join(unknown)}; use [--check] [--root DIR]", file=sys.stderr)
        return 2
    text = generate(root)
    target = root / OUT
    if check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            what = "is missing" if current is None else f"is out of date with {SCHEMA}"
            print(f"{OUT} {what}; regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    write_text(target, text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
