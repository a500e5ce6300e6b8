"""Model families (workflow_scripts/planning/families.py): the table, what pruning rewrites per
family, and the plan-time gate on the base's model_type and the target."""
import json
import subprocess
import sys

import pytest
import yaml

from workflow_scripts import REPO
from workflow_scripts.planning.config import ConfigError, load_plan
from workflow_scripts.planning.families import FAMILIES, UnknownFamily, family, pruned_config


def demo_config():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def test_every_family_builds_in_the_compress_env_with_its_table_entry():
    """The class names in the table are the ones transformers 4.57.3 builds for the model_type."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for model_type, fam in FAMILIES.items():
        cfg = AutoConfig.for_model(model_type, num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=300)
        model = AutoModelForCausalLM.from_config(cfg)
        classes = {type(m).__name__ for m in model.modules()}
        assert fam.decoder_layer in classes and fam.norm in classes, model_type
        linears = {n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        assert set(fam.lora_targets) <= linears, model_type
        assert bool(model.model.layers[0].self_attn.q_proj.bias is not None) == fam.qkv_bias, model_type
        for key in fam.per_layer_config:
            assert len(getattr(cfg, key)) == 2, (model_type, key)


def test_pruning_cuts_the_per_layer_lists_and_recounts_the_window():
    exaone = {"num_hidden_layers": 6, "layer_types": ["sliding_attention", "full_attention"] * 3}
    assert pruned_config(exaone, [0, 1, 3, 5], family("exaone4")) == {
        "num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention", "full_attention",
                                                "full_attention"]}
    # Qwen: layers below max_window_layers are full attention; 2 of the kept ones are.
    qwen = {"num_hidden_layers": 6, "max_window_layers": 3,
            "layer_types": ["full_attention"] * 3 + ["sliding_attention"] * 3}
    out = pruned_config(qwen, [0, 2, 4, 5], family("qwen2"))
    assert out == {"num_hidden_layers": 4, "max_window_layers": 2,
                   "layer_types": ["full_attention"] * 2 + ["sliding_attention"] * 2}
    assert pruned_config({"num_hidden_layers": 6}, [0, 5], family("llama")) == {"num_hidden_layers": 2}


def test_unknown_model_type_names_itself_and_the_supported_families():
    with pytest.raises(UnknownFamily) as e:
        family("gpt_neox")
    assert str(e.value) == ("model_type 'gpt_neox' is not a supported family; "
                            "supported: exaone4, llama, mistral, qwen2, qwen3")


def test_demo_base_of_an_unknown_family_is_a_config_error():
    cfg = demo_config()
    cfg["base"]["demo"]["model_type"] = "gpt_neox"
    with pytest.raises(ConfigError) as e:
        load_plan(cfg, "demo.yaml")
    assert str(e.value).startswith("demo.yaml: base.demo.model_type: model_type 'gpt_neox' is not a supported family")


def test_local_base_folder_is_read_at_plan_time(tmp_path):
    folder = tmp_path / "my_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["base"]["local_path"] = str(folder)
    with pytest.raises(ConfigError, match="config.yaml: base.local_path: model_type 'gpt_neox'"):
        load_plan(cfg, "config.yaml")


def test_contest_target_takes_exaone_only():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["base"]["hub_id"] = "Qwen/Qwen2.5-1.5B-Instruct"  # the registry says qwen2
    with pytest.raises(ConfigError, match="target.name: the contest target takes EXAONE-4.0 models only"):
        load_plan(cfg, "config.yaml")


def test_snakemake_dry_run_rejects_an_unknown_family_in_one_line(tmp_path):
    cfg = demo_config()
    cfg["base"]["demo"]["model_type"] = "gpt_neox"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "--cores", "1"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("config error:")]
    assert errors == [f"config error: {path}: base.demo.model_type: model_type 'gpt_neox' is not a supported "
                      "family; supported: exaone4, llama, mistral, qwen2, qwen3"]
