"""The model gate (workflow_scripts/planning/models_policy.py): every model a config names must be in the
registry, released before the cutoff, under a license allowed for its role; one line otherwise."""
import subprocess
import sys

import pytest
import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.config import ConfigError, load_plan
from workflow_scripts.planning.models_policy import load_registry, named_models


def real_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def registry_with(tmp_path, **extra):
    doc = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
    doc["models"].update(extra)
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def entry(**kw):
    return {"roles": ["teacher", "judge"], "license": "apache-2.0", "license_url": "https://example.org/LICENSE",
            "released": "2025-03-01", "released_source": "https://example.org/blog", "params_b": 7.0,
            "weights_public": True, **kw}


def config_naming(tmp_path, teacher, **registry):
    cfg = real_config()
    cfg.setdefault("models_policy", {})["registry"] = registry_with(tmp_path, **registry)
    cfg["teacher"]["model"] = teacher
    return cfg


def test_shipped_registry_and_configs_pass():
    reg = load_registry("config/models.yaml")
    for model in ("LGAI-EXAONE/EXAONE-4.0-1.2B", "LGAI-EXAONE/EXAONE-4.0-32B", "Qwen/Qwen2.5-7B-Instruct",
                  "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen3-30B-A3B-Instruct-2507"):
        assert reg[model]["license_url"].startswith("https://") and reg[model]["released"] < "2025-08-01"
    cfg = real_config()
    load_plan(cfg, "config.yaml")
    assert named_models(cfg) == [("base.hub_id", "base", "LGAI-EXAONE/EXAONE-4.0-1.2B"),
                                 ("teacher.model", "teacher", cfg["teacher"]["model"])]


CASES = {
    "released after the cutoff": (dict(teacher="acme/late-7b", **{"acme/late-7b": entry(released="2025-09-01")}),
                                  "teacher.model: acme/late-7b was released 2025-09-01",
                                  "expected before 2025-08-01 (models_policy.released_before)"),
    "disallowed license": (dict(teacher="acme/nc-7b", **{"acme/nc-7b": entry(license="cc-by-nc-4.0")}),
                           "teacher.model: acme/nc-7b is under license cc-by-nc-4.0",
                           "not allowed for the teacher role"),
    "not in the registry": (dict(teacher="acme/unknown-7b"), "teacher.model: acme/unknown-7b is not in the model registry",
                            "(models_policy.registry)"),
    "license allowed for another role only": (dict(teacher="LGAI-EXAONE/EXAONE-4.0-32B"),
                                              "is under license exaone", "not allowed for the teacher role"),
    "registered for other roles": (dict(teacher="acme/judge-only", **{"acme/judge-only": entry(roles=["judge"])}),
                                   "registered for roles ['judge'], not teacher", "models.acme/judge-only.roles"),
    "private weights": (dict(teacher="acme/private", **{"acme/private": entry(weights_public=False)}),
                        "acme/private has no publicly downloadable weights", "require_public_weights"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gate_violations_are_one_line(tmp_path, case):
    kw, *needles = CASES[case]
    kw = dict(kw)
    cfg = config_naming(tmp_path, kw.pop("teacher"), **kw)
    with pytest.raises(ConfigError) as err:
        load_plan(cfg, "cfg.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cfg.yaml: "), msg
    assert all(n in msg for n in needles), msg


def test_base_and_judge_are_checked_and_the_demo_base_is_exempt(tmp_path):
    cfg = real_config()
    cfg["base"]["hub_id"] = "acme/unknown-1b"
    with pytest.raises(ConfigError, match=r"base\.hub_id: acme/unknown-1b is not in the model registry"):
        load_plan(cfg, "cfg.yaml")
    cfg = real_config()
    cfg["judge"] = {"model": "/models/local-judge", "id": "acme/unknown-judge"}
    with pytest.raises(ConfigError, match=r"judge\.id: acme/unknown-judge is not in the model registry"):
        load_plan(cfg, "cfg.yaml")
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    assert demo["teacher"]["model"] == "base" and named_models(demo) == []
    load_plan(demo, "demo.yaml")


def test_a_base_teacher_needs_its_license_to_allow_teaching():
    cfg = real_config()
    cfg["teacher"]["model"] = "base"  # EXAONE-4.0-1.2B teaching: `exaone` is allowed for base only
    with pytest.raises(ConfigError, match=r"teacher\.model: LGAI-EXAONE/EXAONE-4.0-1.2B is under license exaone"):
        load_plan(cfg, "cfg.yaml")


def test_a_broken_registry_is_one_line(tmp_path):
    cfg = real_config()
    cfg.setdefault("models_policy", {})["registry"] = registry_with(tmp_path, **{"acme/x": entry(released="July 2025")})
    with pytest.raises(ConfigError, match=r"models\.acme/x\.released: 'July 2025' does not match"):
        load_plan(cfg, "cfg.yaml")


@pytest.mark.e2e  # a Snakemake dry run
@pytest.mark.parametrize("case", ["released after the cutoff", "disallowed license", "not in the registry"])
def test_snakemake_dry_run_fails_with_one_line(tmp_path, case):
    kw, *needles = CASES[case]
    kw = dict(kw)
    cfg = config_naming(tmp_path, kw.pop("teacher"), **kw)
    cfg["results"] = str(tmp_path / "results")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)],
                          cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    errors = [l for l in out.splitlines() if l.startswith("config error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in out, out[-2000:]
    assert errors[0].startswith(f"config error: {path}: teacher.model: ") and all(n in errors[0] for n in needles)
    assert not (tmp_path / "results").exists()
