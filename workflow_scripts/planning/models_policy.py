"""The model gate (contest rule 2): every model a config names -- the base (hub_id), the teacher,
the judge -- must be in the model registry (config/models.yaml), officially released before
`models_policy.released_before`, under a license `models_policy.allowed_licenses` allows for the
role it plays, with public weights. Checked at parse time from the registry's recorded facts
(nothing is downloaded); a violation is one ConfigError line naming the model, the fact and the rule.

Models the workflow builds itself (base.source: demo, and `teacher: {model: base}` on such a
base) are not external models and are exempt.

    python -m workflow_scripts.planning.models_policy [config/config.yaml]   # check a config, list the registry
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.schema import ConfigError, validate

BASE_ALIAS = "base"  # teacher.model: the workflow's own base model


def _dates_as_text(doc):
    """YAML reads an unquoted 2025-07-15 as a date; the registry schema expects the text."""
    for entry in (doc.get("models") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("released"), datetime.date):
            entry["released"] = entry["released"].isoformat()
    return doc


def load_registry(path) -> dict:
    """{model id: entry} of a registry file, validated against config/schemas/models.schema.yaml."""
    path = Path(path)
    if not path.is_absolute():
        path = REPO / path
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "model registry does not exist (models_policy.registry)") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, "(yaml)", f"not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(path, "(top level)", "expected a mapping with models:")
    validate(_dates_as_text(doc), "models.schema.yaml", path)
    return doc["models"]


def named_models(config, config_file="config") -> list:
    """(config key, role, model id) for every external model the config names."""
    base = config["base"]
    base_id = None if base["source"] == "demo" else base.get("hub_id")
    if base["source"] == "hub" and not base_id:
        raise ConfigError(config_file, "base.hub_id", "required by the model gate: the hub id that "
                          "base.local_path is a copy of")
    named = [("base.hub_id", "base", base_id)] if base_id else []
    teacher = (config.get("teacher") or {}).get("model")
    if teacher == BASE_ALIAS:
        teacher = base_id  # the base teaching: its license must allow that role too
    if teacher:
        named.append(("teacher.model", "teacher", teacher))
    judge = config.get("judge") or {}
    if judge.get("model"):
        # A local judge folder names its registry entry with judge.id.
        named.append(("judge.id" if judge.get("id") else "judge.model", "judge", judge.get("id") or judge["model"]))
    return named


def violation(model_id, role, registry, policy, registry_file):
    """Why `model_id` may not play `role` under `policy`, in one line, or None."""
    entry = registry.get(model_id)
    if entry is None:
        return (f"{model_id} is not in the model registry {registry_file}; add it with its license, "
                f"release date and their source URLs (models_policy.registry)")
    cutoff = policy["released_before"]
    if entry["released"] >= cutoff:
        return (f"{model_id} was released {entry['released']} ({entry['released_source']}), expected before "
                f"{cutoff} (models_policy.released_before)")
    allowed_roles = (policy.get("allowed_licenses") or {}).get(entry["license"])
    if not allowed_roles or role not in allowed_roles:
        allowed = sorted(lic for lic, roles in (policy.get("allowed_licenses") or {}).items() if role in roles)
        return (f"{model_id} is under license {entry['license']} ({entry['license_url']}), not allowed for the "
                f"{role} role; expected one of {allowed} (models_policy.allowed_licenses)")
    if role not in entry["roles"]:
        return (f"{model_id} is registered for roles {entry['roles']}, not {role} "
                f"({registry_file}: models.{model_id}.roles)")
    if policy.get("require_public_weights", True) and not entry["weights_public"]:
        return (f"{model_id} has no publicly downloadable weights ({registry_file}), expected public weights "
                f"(models_policy.require_public_weights)")
    return None


def check_models(config, config_file):
    """Raise a ConfigError for the first model of the config that fails the gate."""
    policy = config["models_policy"]
    registry = load_registry(policy["registry"])
    for key, role, model_id in named_models(config, config_file):
        why = violation(model_id, role, registry, policy, policy["registry"])
        if why:
            raise ConfigError(config_file, key, why)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configfile", nargs="?", default="config/config.yaml")
    args = ap.parse_args(argv)
    config = yaml.safe_load(Path(args.configfile).read_text())
    try:
        validate(config, "config.schema.yaml", args.configfile)  # fills models_policy's defaults
        check_models(config, args.configfile)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 1
    policy = config["models_policy"]
    for model_id, e in load_registry(policy["registry"]).items():
        family = f"  {e['model_type']} ({e['card']})" if e.get("model_type") else ""
        print(f"{model_id:40s} {e['license']:12s} released {e['released']}  {e['params_b']}B  "
              f"roles {','.join(e['roles'])}{family}")
    for key, role, model_id in named_models(config):
        print(f"{key}: {model_id} ({role}) passes models_policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
