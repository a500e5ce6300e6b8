"""Every key the config schemas define is read by some code: a setting that does nothing is a bug
(a user sets it and nothing changes). A key counts as read when code names it as a string,
an attribute or a keyword (`"key"`, `'key'`, `.key`, `key=`)."""
import re

import yaml

from workflow_scripts import REPO

SCHEMAS = ["config.schema.yaml", "lanes.schema.yaml", "models.schema.yaml"]
# Keys read generically rather than by name: each resource entry is passed whole to Snakemake,
# per-rule resource tables are looked up by the rule's name.
GENERIC = {"threads", "mem_mb", "runtime", "gpu"}


def schema_keys(node, path=()):
    """(dotted path, key) for every property of every object in a JSON schema."""
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            yield ".".join(path + (key,)), key
            yield from schema_keys(sub, path + (key,))
        for word in ("definitions", "$defs", "additionalProperties", "items"):
            sub = node.get(word)
            if isinstance(sub, dict):
                children = sub.values() if word in ("definitions", "$defs") else [sub]
                for child in children:
                    yield from schema_keys(child, path + ("*",))
        for word in ("oneOf", "anyOf", "allOf"):
            for sub in node.get(word) or []:
                yield from schema_keys(sub, path)


def code_text():
    files = [*(REPO / "workflow_scripts").rglob("*.py"), *(REPO / "rules").glob("*.smk"), REPO / "Snakefile"]
    return "\n".join(p.read_text() for p in files)


def test_every_schema_key_is_read_by_code():
    code = code_text()
    unread = []
    for name in SCHEMAS:
        schema = yaml.safe_load((REPO / "config" / "schemas" / name).read_text())
        for dotted, key in schema_keys(schema):
            if key in GENERIC:
                continue
            pattern = rf"""["']{re.escape(key)}["']|\.{re.escape(key)}\b|\b{re.escape(key)}="""
            if not re.search(pattern, code):
                unread.append(f"{name}: {dotted}")
    assert not unread, "schema keys no code reads: " + ", ".join(unread)
