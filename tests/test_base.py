"""The base model stage: the demo model's shape, its tokenizer, a short training run that
saves a loadable model, and the local-path copy of a real model."""
import dataclasses
import json

import pytest

from workflow_scripts import REPO
from workflow_scripts.common import StageError
from workflow_scripts.demo import data as demo_data
from workflow_scripts.demo import model as demo_model
from workflow_scripts.planning.config import read_config
from workflow_scripts.stages import base, data

DEMO = read_config(REPO / "config" / "demo.yaml")  # validated: the schema's defaults filled
KOREAN = "라솔의 상징색은 파랑입니다. 미도는 아르벤에 있는 도시입니다. Hello, Arven 42!"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Prepared demo data from a small invented world."""
    root = tmp_path_factory.mktemp("base_data")
    sizes = dataclasses.replace(demo_data.Sizes(), cities=6, people=4, items=4, two_turn=20,
                                longqa_train=20, longqa_test=8, longqa_passages=3)
    raw = root / "demo_raw"
    demo_data.generate(raw, sizes=sizes)
    spec = {"seed": 42, "data": {**DEMO["data"], "generate_demo": False},
            "benchmarks": {"mcqa": {**DEMO["benchmarks"]["demo_mcqa"], "local_file": str(raw / "mcqa.jsonl")}}}
    spec["data"]["sft"] = {**spec["data"]["sft"], "local_file": str(raw / "sft.jsonl")}
    data.prepare(spec, root)
    (root / "corpus.txt").write_text((raw / "corpus.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tokenizer(small_data):
    docs, chats = demo_model.training_texts(small_data)
    return demo_model.train_tokenizer(docs + [m["content"] for c in chats for m in c], 1024, korean_words=True)


def test_demo_model_has_the_configured_exaone_shape(tokenizer):
    arch = DEMO["base"]["demo"]
    model = demo_model.build_model(tokenizer, arch)
    cfg = model.config
    assert type(model).__name__ == "Exaone4ForCausalLM"
    assert cfg.num_hidden_layers == arch["num_hidden_layers"]
    assert cfg.layer_types == ["full_attention"] * arch["num_hidden_layers"]
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.hidden_size % 128 == 0 and cfg.intermediate_size % 128 == 0
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (arch["num_attention_heads"],
                                                                 arch["num_key_value_heads"])
    assert cfg.vocab_size == len(tokenizer) <= arch["vocab_size"]


def test_tokenizer_round_trips_korean_and_has_the_chat_template(tokenizer):
    ids = tokenizer(KOREAN, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == KOREAN
    # a name and a value keep one spelling with or without their particle / copula
    tokens = tokenizer.tokenize("라솔의 상징색은 파랑입니다.")
    assert tokenizer.tokenize("라솔")[0] in tokens and tokenizer.tokenize("파랑")[0] in tokens
    assert tokenizer.eos_token == "[|endofturn|]"


# EXAONE 4.0's template in non-reasoning mode, written out by hand: every turn
# `[|role|]\n...[|endofturn|]\n`, an assistant turn and the generation prompt with an empty think block.
CONVERSATION = [{"role": "system", "content": "당신은 친절한 도우미입니다."},
                {"role": "user", "content": "라솔의 상징색은 무엇인가요?"},
                {"role": "assistant", "content": "라솔의 상징색은 파랑입니다."},
                {"role": "user", "content": "미도는요?"}]
EXPECTED = ("[|system|]\n당신은 친절한 도우미입니다.[|endofturn|]\n"
            "[|user|]\n라솔의 상징색은 무엇인가요?[|endofturn|]\n"
            "[|assistant|]\n<think>\n\n</think>\n\n라솔의 상징색은 파랑입니다.[|endofturn|]\n"
            "[|user|]\n미도는요?[|endofturn|]\n")
GENERATION_PROMPT = "[|assistant|]\n<think>\n\n</think>\n\n"


def test_chat_template_renders_exaone4_non_reasoning_format(tokenizer):
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == EXPECTED
    assert (tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
            == EXPECTED + GENERATION_PROMPT)
    # the think markers are one token each and survive decoding (answer parsing sees them)
    ids = tokenizer(GENERATION_PROMPT, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<think>") in ids and tokenizer.convert_tokens_to_ids("</think>") in ids
    assert tokenizer.decode(ids) == GENERATION_PROMPT


def test_sft_labels_cover_only_the_assistant_content_and_its_end_of_turn(tokenizer):
    from workflow_scripts.stages.chat_data import IGNORE, encode_chat

    messages = CONVERSATION[:3]
    enc = encode_chat(tokenizer, messages, 512)
    trained = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE]
    assert tokenizer.decode(trained) == "라솔의 상징색은 파랑입니다.[|endofturn|]"
    # the labelled tokens are one contiguous run right after the generation prompt
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    first = next(i for i, lab in enumerate(enc["labels"]) if lab != IGNORE)
    assert first == n_prompt and enc["labels"][first:first + len(trained)] == trained
    assert all(lab == IGNORE for lab in enc["labels"][first + len(trained):])  # not the newline after it


def test_short_training_lowers_the_loss_and_saves_a_loadable_model(small_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    demo = {**DEMO["base"]["demo"], "num_hidden_layers": 2, "vocab_size": 1024, "max_steps": 40,
            "threads": 1, "batch_size": 4, "seq_length": 128, "learning_rate": 3e-3}
    spec = {"base": {"source": "demo", "demo": demo}, "compute": {"device": "cpu", "seed": 42}}
    out = tmp_path / "base"
    stats = demo_model.build_demo(spec, small_data, out)
    assert stats["steps"] == 40
    assert stats["loss"] < 0.7 * stats["first_loss"]

    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.num_hidden_layers == 2
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("[|endofturn|]")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left
    prompt = tok.apply_chat_template([{"role": "user", "content": "라솔의 상징색은 무엇인가요?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


def test_training_is_bound_by_steps_and_repeats_exactly(small_data, tokenizer):
    """The same seed, steps and thread count give the same weights, however long the steps take."""
    import torch

    docs, chats = demo_model.training_texts(small_data)
    rows = demo_model.pack(demo_model.encode_examples(tokenizer, docs, chats, 64), 64, tokenizer.pad_token_id)
    arch = {**DEMO["base"]["demo"], "num_hidden_layers": 2}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for _ in range(2):
            model = demo_model.build_model(tokenizer, arch)
            stats = demo_model.train_causal_lm(model, rows, {"max_steps": 6, "batch_size": 2}, seed=42)
            runs.append((stats, model.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (a, wa), (b, wb) = runs
    assert a["steps"] == b["steps"] == 6 and a["loss"] == b["loss"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_hub_source_copies_a_local_model_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "models" / "base"
    base.fetch_hub({"source": "hub", "hub_id": "LGAI-EXAONE/EXAONE-4.0-1.2B", "local_path": str(tiny_model_dir)}, out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "exaone4"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
    with pytest.raises(StageError, match="missing"):
        base.fetch_hub({"source": "hub", "local_path": str(tmp_path / "missing")}, tmp_path / "other")


def test_missing_prepared_data_is_a_one_line_error(tmp_path):
    spec = {"base": {"source": "demo", "demo": DEMO["base"]["demo"]}, "compute": {"device": "cpu", "seed": 42}}
    with pytest.raises(StageError, match="corpus.txt") as err:
        base.main(["--spec", json.dumps(spec), "--data", str(tmp_path), "--out", str(tmp_path / "base")])
    assert "\n" not in str(err.value)
