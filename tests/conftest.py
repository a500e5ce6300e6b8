"""Shared fixtures: a tiny EXAONE-shaped model and small prepared data, built once per session."""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for workflow_scripts
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from workflow_scripts import REPO  # noqa: E402
from workflow_scripts.demo import model as demo_model  # noqa: E402

# Where the demo config writes (config/demo.yaml `results`): tests that run it look there.
DEMO_RESULTS = "results/demo"

TINY_ARCH = dict(num_hidden_layers=4, hidden_size=128, intermediate_size=256,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


# Each module's tier (pytest.ini); a test may carry its own tier marker instead.
TIERS = {
    "unit": ["test_answers", "test_parse_rate", "test_noise", "test_report", "test_config", "test_teacher_filters",
             "test_models_policy", "test_search_report", "test_gpu_slot"],
    "model": ["test_base", "test_chat_data", "test_data", "test_quantize", "test_prune", "test_sft",
              "test_post_sft", "test_kd", "test_sensitivity"],
    "serve": ["test_evaluate", "test_teacher", "test_target_check", "test_package"],
    "e2e": ["test_e2e", "test_dag", "test_sweeps"],
    "slurm": ["test_slurm_profile"],
}
TIER_OF = {module: tier for tier, modules in TIERS.items() for module in modules}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, TIER_OF.get(item.module.__name__, "e2e")))


def _conversations(n, seed):
    rng = random.Random(seed)
    cities = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "수원"]
    colors = ["빨강", "파랑", "초록", "노랑", "보라", "검정"]
    rows = []
    for i in range(n):
        c, k = rng.choice(cities), rng.choice(colors)
        rows.append({"id": f"t{seed}-{i}", "messages": [
            {"role": "user", "content": f"{c}의 상징색은 무엇인가요? What is the color of {c}?"},
            {"role": "assistant", "content": f"{c}의 상징색은 {k}입니다. The color is {k}."},
        ]})
    return rows


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """sft_train / sft_val / calib JSONL in the prepared-data schema (docs/data.md)."""
    d = tmp_path_factory.mktemp("data")
    for name, n, seed in [("sft_train", 64, 1), ("sft_val", 16, 2), ("calib", 16, 3)]:
        with open(d / f"{name}.jsonl", "w") as f:
            for row in _conversations(n, seed):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_data_dir):
    """A randomly initialised 4-layer Exaone4ForCausalLM (hidden 128) with its BPE tokenizer."""
    out = tmp_path_factory.mktemp("models") / "base"
    texts = [m["content"] for line in open(tiny_data_dir / "sft_train.jsonl")
             for m in json.loads(line)["messages"]]
    tok = demo_model.train_tokenizer(texts, vocab_size=512)
    model = demo_model.build_model(tok, TINY_ARCH)
    demo_model.save(model, tok, out)
    return out


@pytest.fixture(scope="session")
def quantized_lanes(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    """{'w4a16': dir, 'w8a8_gptq': dir}: the tiny model quantized by the quantize stage."""
    from workflow_scripts.stages.quantize import quantize

    root = tmp_path_factory.mktemp("quantized_lanes")
    calib = {"num_calibration_samples": 4, "max_seq_length": 64}
    recipes = {"w4a16": {"scheme": "W4A16", "method": "gptq", "group_size": 128, **calib},
               "w8a8_gptq": {"scheme": "W8A8", "method": "gptq", "dampening_frac": 0.01, **calib}}
    for name, recipe in recipes.items():
        quantize(tiny_model_dir, tiny_data_dir / "calib.jsonl", recipe, root / name)
    return {name: root / name for name in recipes}


def copy_with(src, dst, config=None, tokenizer_config=None, tensors=None):
    """A copy of a model folder with config.json / tokenizer_config.json edited by the given
    functions, and extra tensors added to its safetensors file."""
    shutil.copytree(src, dst)
    for name, edit in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if edit:
            doc = json.loads((dst / name).read_text())
            edit(doc)
            (dst / name).write_text(json.dumps(doc, indent=2))
    if tensors:
        from safetensors.torch import load_file, save_file

        path = dst / "model.safetensors"
        save_file({**load_file(path), **tensors(load_file(path))}, path, metadata={"format": "pt"})
    return dst


def assert_same_tokenizer(parent, out):
    """The stage carried its parent's tokenizer files over byte for byte (never re-saved)."""
    from workflow_scripts.common import tokenizer_files

    files = tokenizer_files(parent)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in files}
    for p in files:
        assert (Path(out) / p.name).read_bytes() == p.read_bytes(), p.name


def assert_one_line_error(stderr, needle):
    """The failure is one `error:` line (progress bars may precede it), no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in stderr, stderr[-2000:]


def run_training_stage(module, model, data, out, recipe):
    """`python -m workflow_scripts.<module>` on the train/val sets of `data`, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"workflow_scripts.stages.{module}", "--model", str(model),
         "--train", str(data / "sft_train.jsonl"), "--val", str(data / "sft_val.jsonl"),
         "--recipe", json.dumps(recipe), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
