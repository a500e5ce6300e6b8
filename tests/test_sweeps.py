"""Sweeps (workflow_scripts/planning/sweeps.py): a grid in lanes.yaml becomes ordinary named lanes at
parse time, with one-line errors; through Snakemake the lanes are planned like hand-written ones,
share one sensitivity measurement, and editing one grid value rebuilds only its lane's chain."""
import copy

import pytest
import yaml
from conftest import DEMO_RESULTS, REPO, planned_outputs, snakemake, touch_workflow
from test_config import demo_config, lanes_doc, with_lanes

from workflow_scripts.planning.config import ConfigError, load_plan
from workflow_scripts.planning.sweeps import point_name, slug

K = "keep_unquantized.most_sensitive"


def sweep_config(tmp_path, grid, lane="w4a16_mixed", **extra):
    """The demo config with one sweep `s` in its lanes file (instead of the shipped one)."""
    doc = lanes_doc()
    doc["sweeps"] = {"s": {"lane": lane, "grid": grid, **extra}}
    cfg = with_lanes(tmp_path, doc)
    cfg["sweep_overrides"] = {}
    return cfg


def test_a_four_value_grid_is_four_lanes(tmp_path):
    cfg = sweep_config(tmp_path, {"dampening_frac": [0.01, 0.02, 0.05, 0.1]})
    plan = load_plan(cfg, "cfg.yaml")
    new = {lane: chain for lane, chain in plan.lanes.items() if lane.startswith("w4a16_mixed__")}
    assert sorted(new) == ["w4a16_mixed__damp0p01", "w4a16_mixed__damp0p02", "w4a16_mixed__damp0p05",
                           "w4a16_mixed__damp0p1"]
    assert new["w4a16_mixed__damp0p05"] == ["gptq_w4a16_mixed__damp0p05"]
    recipe = plan.recipes["gptq_w4a16_mixed__damp0p05"]
    # The base recipe with the demo's overrides, one value changed, and the sweep's shared sensitivity.
    assert recipe == {**plan.recipes["gptq_w4a16_mixed"], "dampening_frac": 0.05}
    assert plan.sensitivity_recipe("gptq_w4a16_mixed__damp0p05") == "gptq_w4a16"
    assert plan.sweeps["s"]["knobs"]["w4a16_mixed"] == {"dampening_frac": 0.01}
    assert plan.sweeps["s"]["knobs"]["w4a16_mixed__damp0p1"] == {"dampening_frac": 0.1}


def test_a_grid_is_every_combination_and_nested_keys_are_set(tmp_path):
    cfg = sweep_config(tmp_path, {K: [1, 3], "num_calibration_samples": [8, 16]})
    plan = load_plan(cfg, "cfg.yaml")
    assert sorted(l for l in plan.lanes if "__" in l) == [
        "w4a16_mixed__k1_n16", "w4a16_mixed__k1_n8", "w4a16_mixed__k3_n16", "w4a16_mixed__k3_n8"]
    assert plan.recipes["gptq_w4a16_mixed__k3_n8"]["keep_unquantized"] == {"most_sensitive": 3,
                                                                           "sensitivity": "gptq_w4a16"}
    assert plan.recipes["gptq_w4a16_mixed__k3_n8"]["num_calibration_samples"] == 8


def test_sweep_overrides_replace_the_grid_and_the_shipped_sweep_expands():
    plan = load_plan(demo_config(), "demo.yaml")
    assert [l for l in plan.lanes if "__" in l] == ["w4a16_mixed__k1"]
    real = load_plan(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "config.yaml")
    assert len([l for l in real.lanes if l.startswith("w4a16_mixed__")]) == 6


def test_names():
    assert slug(0.05) == "0p05" and slug([0, 3]) == "0_3" and slug("FP8") == "fp8" and slug(1e-05) == "1em05"
    assert point_name({K: 2, "dampening_frac": 0.1, "lora_r": 8}) == "k2_damp0p1_lora_r8"


ERRORS = {
    "unknown key": (dict(grid={"dampening_fra": [0.1]}), "sweeps.s.grid.dampening_fra",
                    "unknown key; expected a parameter that recipe 'gptq_w4a16_mixed' sets"),
    "unknown nested key": (dict(grid={"keep_unquantized.most": [1]}), "sweeps.s.grid.keep_unquantized.most",
                           "unknown key"),
    "empty grid": (dict(grid={}), "sweeps.s.grid", "empty grid"),
    "empty values": (dict(grid={"dampening_frac": []}), "sweeps.s.grid.dampening_frac",
                     "expected a non-empty list of values"),
    "values not a list": (dict(grid={"dampening_frac": 0.1}), "sweeps.s.grid.dampening_frac", "not of type 'array'"),
    "unknown lane": (dict(grid={"dampening_frac": [0.1]}, lane="w4a17"), "sweeps.s.lane", "unknown lane 'w4a17'"),
    "recipe not in chain": (dict(grid={"dampening_frac": [0.1]}, recipe="sft"), "sweeps.s.recipe",
                            "expected a recipe of lane 'w4a16_mixed'"),
    "invalid generated recipe": (dict(grid={"scheme": ["W3A16"]}), "recipes.gptq_w4a16_mixed__schemew3a16.scheme",
                                 "expected one of"),
    "keeps every layer": (dict(grid={K: [6]}), "lanes.w4a16_mixed__k6[0]",
                          "keeps the 6 most sensitive layers, expected fewer than the 6"),
    "unknown sweep key": (dict(grid={"dampening_frac": [0.1]}, lanes=["x"]), "sweeps.s", "lanes"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_sweep_is_one_clear_line(tmp_path, case):
    spec, key, expected = ERRORS[case]
    spec = copy.deepcopy(spec)
    cfg = sweep_config(tmp_path, spec.pop("grid"), **spec)
    with pytest.raises(ConfigError) as err:
        load_plan(cfg, "cfg.yaml")
    msg = str(err.value)
    assert "\n" not in msg and key in msg and expected in msg, msg


def test_bad_sweep_override_is_one_clear_line(tmp_path):
    cfg = demo_config()
    cfg["sweep_overrides"] = {"nope": {"grid": {K: [1]}}}
    with pytest.raises(ConfigError, match=r"demo.yaml: sweep_overrides.nope: unknown sweep"):
        load_plan(cfg, "demo.yaml")
    cfg["sweep_overrides"] = {"w4a16_mixed": {"grid": {}}}
    with pytest.raises(ConfigError, match=r"demo.yaml: sweep_overrides.w4a16_mixed.grid: .*empty grid"):
        load_plan(cfg, "demo.yaml")


def test_keep_unquantized_and_calibration_mix_are_checked(tmp_path):
    cases = [({"keep_unquantized": [0, 0]}, "recipes.gptq_w4a16.keep_unquantized", "distinct layer indices"),
             ({"keep_unquantized": [7]}, "lanes.", "keeps layer 7, but its parent has"),  # 6, or fewer when pruned
             ({"keep_unquantized": {"most": 2}}, "recipes.gptq_w4a16.keep_unquantized", "most_sensitive"),
             ({"keep_unquantized": {"most_sensitive": 2, "sensitivity": "sft"}},
              "recipes.gptq_w4a16.keep_unquantized.sensitivity", "expected a quantize recipe"),
             ({"calibration_mix": {"calib": 1, "wiki": 1}}, "recipes.gptq_w4a16.calibration_mix", "sources from")]
    for extra, key, expected in cases:
        doc = lanes_doc()
        doc["recipes"]["gptq_w4a16"].update(extra)
        with pytest.raises(ConfigError) as err:
            load_plan(with_lanes(tmp_path, doc), "cfg.yaml")
        assert key in str(err.value) and expected in str(err.value), (extra, str(err.value))


# --- through Snakemake ---------------------------------------------------------------------

def with_grid(cfg, grid):
    """`cfg` running only the w4a16_mixed sweep's lanes, with this grid of most_sensitive."""
    cfg["sweep_overrides"] = {"w4a16_mixed": {"grid": {K: grid}}}
    cfg["lanes"] = [f"w4a16_mixed__k{k}" for k in grid]
    return cfg


def models(grid):
    return [f"{DEMO_RESULTS}/models/base.gptq_w4a16_mixed__k{k}" for k in grid]


@pytest.mark.e2e  # a Snakemake dry run
def test_a_sweep_is_planned_as_lanes(tmp_path):
    cfg = with_grid(demo_config(), [1, 2, 3, 4])
    cfg["lanes_file"] = str(REPO / "config" / "lanes.yaml")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                    "--configfile", str(tmp_path / "cfg.yaml"), "--cores", "2", "-n")  # nothing built there: every job
    planned = planned_outputs(out)
    for k in (1, 2, 3, 4):
        assert f"{DEMO_RESULTS}/metrics/w4a16_mixed__k{k}.json" in planned
    assert planned.count(f"{DEMO_RESULTS}/analysis/base.gptq_w4a16.sensitivity.json") == 1  # shared by all four


@pytest.mark.e2e  # Snakemake runs on a touched working directory
def test_editing_a_grid_value_rebuilds_only_its_lane(tmp_path):
    cfg = with_grid(demo_config(), [1, 2])
    cfg["lanes_file"] = str(REPO / "config" / "lanes.yaml")
    common = touch_workflow(tmp_path, cfg)
    # The grid's value reaches the stage: the quantize command of k2 keeps the 2 most sensitive layers.
    plan = snakemake(*common, "-n", "--forceall", *models([2]))
    (cmd,) = [line for line in plan.splitlines() if line.startswith("Shell command: ")
              and "stages.quantize" in line and "base.gptq_w4a16_mixed__k2" in line]
    assert '"most_sensitive": 2' in cmd, cmd

    # One grid value edited: 2 -> 3. The other lane and the shared sensitivity stay built.
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(with_grid(copy.deepcopy(cfg), [1, 3])))
    planned = planned_outputs(snakemake(*common, "-n"))
    assert [o for o in planned if o.startswith(f"{DEMO_RESULTS}/models/")] == models([3]), planned
    assert f"{DEMO_RESULTS}/analysis/base.gptq_w4a16.sensitivity.json" not in planned
    assert f"{DEMO_RESULTS}/metrics/w4a16_mixed__k3.json" in planned
