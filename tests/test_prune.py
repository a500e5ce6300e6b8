"""Layer pruning on the tiny model: the choice follows the scores, the saved model is a plain
shallower Exaone4 that computes exactly what the original computes with those layers skipped."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, assert_same_tokenizer, run_main
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from workflow_scripts.common import StageError, chat_text, read_jsonl, staged_output
from workflow_scripts.demo import model as demo_model
from workflow_scripts.stages import prune

RECIPE = {"keep_layers": 3, "metric": "block_influence", "num_calibration_samples": 16,
          "max_seq_length": 256, "batch_size": 5}  # 16 rows in batches of 5: padding is exercised


def run(model, calib, recipe, out):
    return prune.main(["--model", str(model), "--calib", str(calib),
                       "--recipe", json.dumps(recipe), "--out", str(out)])


@pytest.fixture(scope="module")
def pruned(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "base.prune3"
    assert run(tiny_model_dir, tiny_data_dir / "calib.jsonl", RECIPE, out) == 0
    return out, json.loads((out / "prune.json").read_text())


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def sample_ids(tok, data_dir, i=0):
    row = read_jsonl(data_dir / "calib.jsonl")[i]
    return tok(chat_text(tok, row["messages"]), add_special_tokens=False, return_tensors="pt").input_ids


def test_keeps_exactly_keep_layers_with_first_and_last(pruned):
    out, info = pruned
    kept, dropped = info["kept_layers"], info["dropped_layers"]
    assert len(kept) == 3 and kept[0] == 0 and kept[-1] == 3
    assert sorted(kept + dropped) == [0, 1, 2, 3]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3
    assert cfg["layer_types"] == ["full_attention"] * 3
    with safe_open(out / "model.safetensors", "pt") as f:
        indices = {int(k.split(".")[2]) for k in f.keys() if k.startswith("model.layers.")}
    assert indices == {0, 1, 2}
    assert_same_tokenizer(Path(info["model"]), out)
    assert not list(out.parent.glob(".*tmp*")), "temp folder left behind"


def test_scores_one_per_layer_and_drop_the_lowest_bi(pruned):
    _, info = pruned
    bi = info["block_influence"]
    assert len(bi) == 4 and all(0 <= b <= 2 for b in bi)
    assert len(info["angular_distance"]["by_start"]) == 4 - 1 + 1  # blocks of 1 layer
    middle = {1: bi[1], 2: bi[2]}
    assert info["dropped_layers"] == [min(middle, key=middle.get)]


def test_scores_match_a_per_sample_computation(pruned, tiny_model_dir, tiny_data_dir):
    """BI recomputed one unpadded conversation at a time with hooks on the decoder layers."""
    _, info = pruned
    model, tok = load(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    ios = []
    hooks = [layer.register_forward_hook(lambda _m, a, o: ios.append((a[0][0], o[0])))
             for layer in model.model.layers]
    sums, tokens = torch.zeros(4, dtype=torch.float64), 0
    with torch.no_grad():
        for i in range(16):
            ios.clear()
            model(sample_ids(tok, tiny_data_dir, i))
            for j, (h_in, h_out) in enumerate(ios):
                sums[j] += (1 - torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1)).sum()
            tokens += ios[0][0].shape[0]
    for h in hooks:
        h.remove()
    assert info["calibration_tokens"] == tokens
    assert torch.allclose(sums / tokens, torch.tensor(info["block_influence"], dtype=torch.float64), atol=1e-5)


def test_pruned_model_equals_original_with_layers_skipped(pruned, tiny_model_dir, tiny_data_dir):
    out, info = pruned
    original, small = load(tiny_model_dir), load(out)
    tok = AutoTokenizer.from_pretrained(out)
    in_memory = prune.drop_layers(load(tiny_model_dir), info["kept_layers"])  # before saving
    assert [layer.self_attn.layer_idx for layer in in_memory.model.layers] == [0, 1, 2]
    # The dropped layers of the original become the identity: they return their input.
    for i in info["dropped_layers"]:
        original.model.layers[i].register_forward_hook(lambda _m, args, _out: args[0])
    # Each decoder layer's input, recorded by a pre-hook (independent of how a transformers
    # release assembles output_hidden_states).
    inputs = {"ref": {}, "got": {}}
    for key, m in (("ref", original), ("got", small)):
        for i, layer in enumerate(m.model.layers):
            layer.register_forward_pre_hook(
                lambda _m, args, kwargs, key=key, i=i: inputs[key].__setitem__(
                    i, (args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
    ids = sample_ids(tok, tiny_data_dir)
    with torch.no_grad():
        ref, got = original(ids), small(ids)
    for j, old in enumerate(info["kept_layers"]):  # input of new layer j == input of old layer kept[j]
        assert torch.allclose(inputs["got"][j], inputs["ref"][old], atol=1e-5)
    assert torch.allclose(got.logits, ref.logits, atol=1e-5)
    # Generation through the KV cache (re-indexed layer_idx) matches too.
    prompt = tok(chat_text(tok, [{"role": "user", "content": "서울의 상징색은?"}], add_generation_prompt=True),
                 add_special_tokens=False, return_tensors="pt").input_ids
    kw = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
    new = small.generate(prompt, **kw)
    assert new.shape[1] == prompt.shape[1] + 8
    assert torch.equal(new, original.generate(prompt, **kw))
    assert torch.equal(new, in_memory.generate(prompt, **kw))
    assert isinstance(tok.decode(new[0, prompt.shape[1]:]), str)


def test_angular_drops_the_closest_contiguous_block(tiny_model_dir, tiny_data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    six = tmp_path / "six"
    demo_model.save(demo_model.build_model(tok, dict(TINY_ARCH, num_hidden_layers=6)), tok, six)
    out = tmp_path / "six.prune3"
    assert run(six, tiny_data_dir / "calib.jsonl", dict(RECIPE, metric="angular"), out) == 0
    info = json.loads((out / "prune.json").read_text())
    dropped, dist = info["dropped_layers"], info["angular_distance"]["by_start"]
    assert info["metric"] == "angular" and info["angular_distance"]["block_size"] == 3
    assert len(dist) == 6 - 3 + 1 and all(0 <= d <= 1 for d in dist)
    assert dropped == list(range(dropped[0], dropped[0] + 3))  # contiguous
    assert dropped[0] == min([1, 2], key=lambda s: dist[s])  # blocks keeping layers 0 and 5
    assert info["kept_layers"] == [i for i in range(6) if i not in dropped]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3


def test_keep_all_layers_exits_2_with_one_line(tiny_model_dir, tiny_data_dir, tmp_path):
    proc = run_main("stages.prune", "--model", tiny_model_dir, "--calib", tiny_data_dir / "calib.jsonl",
                    "--recipe", json.dumps(dict(RECIPE, keep_layers=4)), "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "keep_layers 4" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["keep_one", "quantized", "missing"])
def test_bad_inputs_raise_stage_error(case, tiny_model_dir, tiny_data_dir, tmp_path):
    model, recipe = tiny_model_dir, dict(RECIPE)
    if case == "keep_one":
        recipe["keep_layers"] = 1
    elif case == "quantized":
        model = tmp_path / "quantized"
        shutil.copytree(tiny_model_dir, model)
        cfg = json.loads((model / "config.json").read_text())
        cfg["quantization_config"] = {"quant_method": "compressed-tensors"}
        (model / "config.json").write_text(json.dumps(cfg))
    else:
        model = tmp_path / "nowhere"
    with pytest.raises(StageError, match=str(model)):
        run(model, tiny_data_dir / "calib.jsonl", recipe, tmp_path / "out")


def test_staged_output_replaces_out_only_at_the_end(tmp_path):
    """The atomic write every stage uses (prune through common.save_model): a temp folder left
    by a killed run is cleared, a failing run leaves the old `out` as it was and no temp folder,
    a successful one replaces `out` whole."""
    out, stale = tmp_path / "model", tmp_path / ".model.tmp"
    out.mkdir()
    (out / "old.json").write_text("{}")
    stale.mkdir()
    (stale / "half.safetensors").write_text("x")
    with pytest.raises(RuntimeError, match="killed"):
        with staged_output(out) as tmp:
            assert tmp.parent == out.parent and not list(tmp.iterdir())
            (tmp / "new.json").write_text("{}")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in out.iterdir()] == ["old.json"]
    with staged_output(out) as tmp:
        (tmp / "new.json").write_text("{}")
        assert [p.name for p in out.iterdir()] == ["old.json"]  # untouched until the block ends
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in out.iterdir()] == ["new.json"]
