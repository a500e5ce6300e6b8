"""Config validation and cross-checks: each bad config fails with one line naming file and key."""
import subprocess
import sys

import pytest
import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.config import ConfigError, chain_dir, kd_teacher, load_plan, split_chain


def demo_config():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def lanes_doc():
    return yaml.safe_load((REPO / "config" / "lanes.yaml").read_text())


def with_lanes(tmp_path, doc):
    path = tmp_path / "lanes.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = demo_config()
    cfg["lanes_file"] = str(path)
    return cfg


def test_shipped_configs_are_valid():
    for name in ("demo.yaml", "config.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        plan = load_plan(cfg, name)
        assert set(plan.lanes) == set(plan.all_lanes)  # the hand-written lanes and the sweeps' lanes
        assert set(lanes_doc()["lanes"]) < set(plan.lanes)
    smoke = load_plan(yaml.safe_load((REPO / "config" / "smoke_real_shape.yaml").read_text()), "smoke_real_shape.yaml")
    assert set(smoke.lanes) == {"w4a16", "w8a8_gptq"}


def test_seed_lanes_and_int8_lanes_are_declared():
    lanes = lanes_doc()["lanes"]
    chains = {tuple(c) for c in lanes.values()}
    assert len(lanes) >= 14
    assert ("sft", "gptq_w4a16") in chains and ("prune26", "kd", "gptq_w4a16") in chains
    plan = load_plan(demo_config(), "demo.yaml")
    schemes = {(plan.recipes[c[0]]["scheme"], plan.recipes[c[0]]["method"]) for c in chains
               if len(c) == 1 and plan.recipes[c[0]]["step"] == "quantize"}
    assert {("W8A8", "gptq"), ("W8A8", "minmax"), ("FP8", "minmax"), ("FP8_DYNAMIC", "minmax")} <= schemes


def test_demo_overrides_apply_and_keep_the_lanes_file_untouched():
    plan = load_plan(demo_config(), "demo.yaml")
    assert plan.recipes["prune28"]["keep_layers"] == 5
    assert lanes_doc()["recipes"]["prune28"]["keep_layers"] == 28


def test_chain_paths():
    assert chain_dir([]) == "base"
    assert chain_dir(["sft", "gptq_w4a16"]) == "base.sft.gptq_w4a16"
    assert split_chain("base.prune28.kd.gptq_w4a16") == ["prune28", "kd", "gptq_w4a16"]
    assert kd_teacher("base.prune28") == "base"
    assert kd_teacher("base.sft.prune26") == "base.sft"
    with pytest.raises(ValueError):
        split_chain("sft.gptq")


def bad_lanes(mutate):
    def make(tmp_path):
        doc = lanes_doc()
        mutate(doc)
        return with_lanes(tmp_path, doc)
    return make


def bad_config(mutate):
    def make(tmp_path):
        cfg = demo_config()
        mutate(cfg)
        return cfg
    return make


CASES = {
    "unknown recipe": (bad_lanes(lambda d: d["lanes"].update(bad=["sft", "gptq_w4a17"])),
                       "lanes.bad[1]", "unknown recipe 'gptq_w4a17'"),
    "kd without prune": (bad_lanes(lambda d: d["lanes"].update(k=["kd"])), "lanes.k[0]", "must follow a prune"),
    "sft after quantize": (bad_lanes(lambda d: d["lanes"].update(q=["gptq_w4a16", "sft"])), "lanes.q[1]",
                           "cannot follow a quantize"),
    "misspelt recipe key": (bad_lanes(lambda d: d["recipes"]["gptq_w4a16"].update(dampening_fracc=0.05)),
                            "recipes.gptq_w4a16.dampening_fracc",
                            "unknown key for a quantize step; expected one of ['calibration_mix', "),
    "misspelt override": (bad_config(lambda c: c["recipe_overrides"]["sft"].update(max_step=5)),
                          "recipes.sft.max_step", "unknown key for a sft step"),
    "mistyped recipe key": (bad_lanes(lambda d: d["recipes"]["kd"].update(temperature="2.0")),
                            "recipes.kd.temperature", "expected int/float, got '2.0'"),
    "seed in a recipe": (bad_lanes(lambda d: d["recipes"]["prune28"].update(seed=1)),
                         "recipes.prune28.seed", "unknown key"),
    "missing required key": (bad_lanes(lambda d: d["recipes"]["sft"].pop("lora_r")),
                             "recipes.sft.lora_r", "required for a sft step"),
    "bad scheme": (bad_lanes(lambda d: d["recipes"]["gptq_w4a16"].update(scheme="W3A16")),
                   "recipes.gptq_w4a16.scheme", "expected one of"),
    "recipe without step": (bad_lanes(lambda d: d["recipes"]["sft"].pop("step")), "recipes.sft",
                            "'step' is a required property"),
    "bad lane name": (bad_lanes(lambda d: d["lanes"].update({"base": ["sft"]})), "lanes", "base"),
    "benchmark without source": (bad_config(lambda c: c["benchmarks"]["demo_mcqa"].update(
        dataset="demo") or c["data"].update(generate_demo=False)), "data.sft.dataset", "generate_demo"),
    "missing local file": (bad_config(lambda c: c["data"].update(generate_demo=False) or c["data"]["sft"].update(
        dataset="x/y", local_file="/nonexistent/sft.jsonl")), "data.sft.local_file", "does not exist"),
    "wrong type": (bad_config(lambda c: c["base"]["demo"].update(hidden_size="big")),
                   "base.demo.hidden_size", "not of type 'integer'"),
    "unknown key": (bad_config(lambda c: c.update(lanez="all")), "(top level)", "lanez"),
    "unknown lane selected": (bad_config(lambda c: c.update(lanes=["w4a16", "nope"])), "lanes",
                              "unknown lane 'nope'"),
    "override of unknown recipe": (bad_config(lambda c: c["recipe_overrides"].update(gptq_w5={"x": 1})),
                                   "recipe_overrides.gptq_w5", "unknown recipe"),
    "template of another kind": (bad_config(lambda c: c["benchmarks"]["demo_mcqa"].update(prompt_template="longqa_ko")),
                                 "benchmarks.demo_mcqa.prompt_template", "expected one of ['mcqa_en', 'mcqa_ko']"),
    "template on mtbench": (bad_config(lambda c: c["benchmarks"]["demo_mtbench"].update(prompt_template="chat")),
                            "benchmarks.demo_mtbench.prompt_template", "sends its turns unchanged"),
    "removed key": (bad_config(lambda c: c["compute"].update(dtype="bfloat16")), "compute", "dtype"),
    "paired with a full device share": (bad_config(lambda c: c["speed"].update(score_uses="paired") or
                                                   c["serve"].update(gpu_memory_utilization=0.85)),
                                        "serve.gpu_memory_utilization", "at most 0.45 with speed.score_uses 'paired'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_one_clear_line(tmp_path, case):
    make, key, expected = CASES[case]
    with pytest.raises(ConfigError) as err:
        load_plan(make(tmp_path), "cfg.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert key in msg and expected in msg, msg


def test_prune_that_keeps_the_base_layers_is_rejected(tmp_path):
    cfg = demo_config()
    cfg["recipe_overrides"]["prune28"]["keep_layers"] = cfg["base"]["demo"]["num_hidden_layers"]
    with pytest.raises(ConfigError, match=r"lanes\.prune28_kd_w4a16\[0\]: prune recipe 'prune28' keeps 6 layers"):
        load_plan(cfg, "demo.yaml")


@pytest.mark.e2e
def test_snakemake_rejects_bad_config_before_any_job(tmp_path):
    """Through real Snakemake: exit 1, one 'config error' line naming file and key, no traceback."""
    doc = lanes_doc()
    doc["lanes"]["bad"] = ["sft", "gptq_w4a17"]
    cfg = with_lanes(tmp_path, doc)
    cfg["results"] = str(tmp_path / "results")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(cfg_path)],
                          cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    errors = [l for l in out.splitlines() if l.startswith("config error:")]
    assert errors == [f"config error: {tmp_path / 'lanes.yaml'}: lanes.bad[1]: unknown recipe 'gptq_w4a17'; "
                      f"expected one of {sorted(doc['recipes'])}"]
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()



def test_stage_recipe_gets_the_declared_defaults_and_rejects_unknown_keys():
    """The stage side of planning/steps.py: what the rule passes, with defaults filled."""
    import json

    from workflow_scripts.common import StageError
    from workflow_scripts.planning.steps import STEPS, load_recipe

    recipe = load_recipe(json.dumps({"scheme": "W8A8", "seed": 7}), "quantize")
    assert recipe["seed"] == 7 and recipe["scheme"] == "W8A8"
    assert {k: recipe[k] for k in STEPS["quantize"] if k != "scheme"} == \
        {k: spec.default for k, spec in STEPS["quantize"].items() if k != "scheme"}
    with pytest.raises(StageError, match=r"^quantize recipe: dampening_fracc: unknown key for a quantize step"):
        load_recipe(json.dumps({"scheme": "W8A8", "dampening_fracc": 0.05}), "quantize")
