"""KD on the tiny model: a briefly trained 4-layer teacher, pruned to 2 layers, distilled back."""
import json

import pytest
import torch
from conftest import assert_same_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from workflow_scripts.common import StageError, chat_text, read_jsonl
from workflow_scripts.demo import model as demo_model
from workflow_scripts.planning.steps import with_defaults
from workflow_scripts.stages import kd, prune
from workflow_scripts.stages.chat_data import chat_dataset, collate

RECIPE = {"temperature": 2.0, "kl_weight": 1.0, "ce_weight": 0.5, "learning_rate": 1e-3,
          "max_steps": 30, "batch_size": 8, "max_seq_length": 256}
FULL_RECIPE = with_defaults("kd", RECIPE)  # what the stage trains with (load_recipe fills the rest)


def run_kd(student, teacher, data, out, recipe=RECIPE):
    return kd.main(["--student", str(student), "--teacher", str(teacher),
                    "--train", str(data / "sft_train.jsonl"), "--val", str(data / "sft_val.jsonl"),
                    "--recipe", json.dumps(recipe), "--out", str(out)])


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """The random tiny model trained for a few steps, so that its outputs are worth copying."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = chat_dataset(tok, read_jsonl(tiny_data_dir / "sft_train.jsonl"), 256)
    batches = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(15):
        for batch in batches:
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
    out = tmp_path_factory.mktemp("kd") / "teacher"
    demo_model.save(model.eval(), tok, out)
    return out


@pytest.fixture(scope="module")
def distilled(teacher_dir, tiny_data_dir):
    student = teacher_dir.parent / "teacher.prune2"
    assert prune.main(["--model", str(teacher_dir), "--calib", str(tiny_data_dir / "calib.jsonl"),
                       "--recipe", json.dumps({"keep_layers": 2}), "--out", str(student)]) == 0
    out = teacher_dir.parent / "teacher.prune2.kd"
    assert run_kd(student, teacher_dir, tiny_data_dir, out) == 0
    return student, out, json.loads((out / "kd_metrics.json").read_text())


def test_val_kl_falls(distilled):
    _, _, m = distilled
    assert m["steps"] == RECIPE["max_steps"] and m["train_seconds"] > 0
    assert m["val_kl_before"] > 0
    assert m["val_kl_after"] < 0.8 * m["val_kl_before"], m
    assert m["teacher_val_ce"] < m["val_ce_before"], "the teacher should be better than the pruned student"
    student, out, _ = distilled
    assert_same_tokenizer(student, out)


def test_output_reloads_generates_and_differs_from_student(distilled, tiny_data_dir):
    student_dir, out, _ = distilled
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    before, after = student.state_dict(), model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert all(any(k.startswith(f"model.layers.{i}.") for k in changed) for i in range(2))
    prompt = tok(chat_text(tok, read_jsonl(tiny_data_dir / "sft_val.jsonl")[0]["messages"][:1],
                           add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")
    new = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert new.shape[1] > prompt.input_ids.shape[1]
    assert not list(out.parent.glob(".*tmp*")), "temp folder left behind"


def test_gradient_accumulation_scales_the_kd_loss(teacher_dir, tiny_data_dir, tmp_path):
    """With grad_accum k, one micro-batch contributes 1/k of the gradient (the Trainer divides
    the loss), as for any other loss; a KD loss must not escape that division."""
    from workflow_scripts.stages.training import training_arguments

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    batch = collate(tok)([chat_dataset(tok, read_jsonl(tiny_data_dir / "sft_train.jsonl"), 128)[i] for i in range(4)])
    norms = {}
    for accum in (1, 4):
        student = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
        trainer = kd.make_trainer_class()(model=student, teacher=teacher, kd_recipe=RECIPE,
                                          args=training_arguments(tmp_path, {**FULL_RECIPE, "grad_accum": accum}))
        trainer.current_gradient_accumulation_steps = accum
        n_items = int((batch["labels"][:, 1:] != -100).sum())
        trainer.training_step(student, dict(batch), num_items_in_batch=n_items)
        norms[accum] = torch.sqrt(sum((p.grad ** 2).sum() for p in student.parameters() if p.grad is not None))
    assert float(norms[4] / norms[1]) == pytest.approx(0.25, rel=1e-3)


def test_kl_is_forward_kl_times_t_squared():
    torch.manual_seed(0)
    s, t, temp = torch.randn(5, 11), torch.randn(5, 11) * 3, 2.0
    p_t = torch.softmax(t / temp, -1)
    expected = (p_t * (p_t.log() - torch.log_softmax(s / temp, -1))).sum(-1).mean() * temp**2
    assert torch.allclose(kd.kd_kl(s, t, temp), expected, atol=1e-6)
    assert kd.kd_kl(t, t, temp).abs() < 1e-6


def test_different_vocabulary_is_a_stage_error(teacher_dir, tiny_data_dir, tmp_path):
    texts = [m["content"] for r in read_jsonl(tiny_data_dir / "sft_train.jsonl") for m in r["messages"]]
    tok = demo_model.train_tokenizer(texts, vocab_size=300)
    other = tmp_path / "other"
    demo_model.save(demo_model.build_model(tok, dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256,
                                         num_attention_heads=4, num_key_value_heads=2)), tok, other)
    with pytest.raises(StageError, match="vocabulary"):
        run_kd(other, teacher_dir, tiny_data_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_recipe_key_is_a_stage_error(teacher_dir, tiny_data_dir, tmp_path):
    recipe = {k: v for k, v in RECIPE.items() if k != "temperature"}
    with pytest.raises(StageError, match="temperature"):
        run_kd(teacher_dir, teacher_dir, tiny_data_dir, tmp_path / "out", recipe)


def _batch(teacher_dir, tiny_data_dir, n=4):
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    return collate(tok)([chat_dataset(tok, read_jsonl(tiny_data_dir / "sft_train.jsonl"), 128)[i] for i in range(n)])


@pytest.mark.parametrize("bf16", [True, False])
def test_training_precision_reaches_the_student_logits(teacher_dir, tiny_data_dir, tmp_path, bf16):
    """The Trainer's precision (bf16 on CUDA) applies to the whole KD loss, which calls the
    model's parts itself: the student's logits come out in bf16 under bf16 training (CPU autocast
    here), in fp32 otherwise."""
    from workflow_scripts.stages.training import training_arguments

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    student = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    trainer = kd.make_trainer_class()(model=student, teacher=teacher, kd_recipe=RECIPE,
                                      args=training_arguments(tmp_path, FULL_RECIPE, bf16=bf16))
    seen = []
    student.lm_head.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    loss = trainer.compute_loss(student, _batch(teacher_dir, tiny_data_dir))
    assert seen and set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)  # softmaxes taken in fp32


def test_logit_blocks_give_the_same_loss_and_gradient(teacher_dir, tiny_data_dir):
    """The vocabulary-sized logits made block by block (and recomputed in backward): the same
    terms and gradients as in one block."""
    batch = _batch(teacher_dir, tiny_data_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    results = []
    for chunk in (7, 10**9):
        student = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
        with torch.no_grad():  # a student that differs from its teacher
            student.model.norm.weight.mul_(0.5)
        kl, ce, teacher_ce = kd.kd_terms(student, teacher, batch, 2.0, chunk=chunk)
        (kl + ce).backward()
        results.append((kl.item(), ce.item(), teacher_ce.item(), student.model.embed_tokens.weight.grad.clone()))
    (kl7, ce7, t7, g7), (kl1, ce1, t1, g1) = results
    assert kl7 > 0 and (kl7, ce7, t7) == pytest.approx((kl1, ce1, t1), rel=1e-5)
    assert torch.allclose(g7, g1, atol=1e-6)
