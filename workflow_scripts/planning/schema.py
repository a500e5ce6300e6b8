"""Config errors and schema validation, shared by every planning module (no planning imports)."""
from __future__ import annotations

import jsonschema

from workflow_scripts import REPO

SCHEMAS = REPO / "config" / "schemas"


class ConfigError(Exception):
    """One line: '<file>: <key>: <what was expected>'."""

    def __init__(self, file, key, expected):
        super().__init__(f"{file}: {key}: {expected}")


def _schema_error(file, err: jsonschema.ValidationError):
    key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    return ConfigError(file, key, err.message)


def validate(doc: dict, schema_name: str, file):
    """Validate with snakemake.utils.validate (which also fills schema defaults)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as sm_validate

    try:
        sm_validate(doc, str(SCHEMAS / schema_name))
    except WorkflowError as e:
        # snakemake keeps the jsonschema error as the exception's context.
        cause = e.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise ConfigError(file, "(schema)", str(e).splitlines()[0]) from None
        # Report the most specific failure, not the first of a oneOf's alternatives.
        raise _schema_error(file, jsonschema.exceptions.best_match([cause])) from None


def section_defaults(*path) -> dict:
    """The schema's defaults of one config section, e.g. ("teacher", "filters"): what validation
    fills into an empty one (for code and tests that build a section by hand)."""
    import yaml

    node = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())
    for key in path:
        node = node["properties"][key]
    return {k: v["default"] for k, v in node["properties"].items() if "default" in v}
