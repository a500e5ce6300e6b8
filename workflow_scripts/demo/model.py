"""The demo's base model: a BPE tokenizer trained with `tokenizers` on the generated corpus, with
the chat template of its family (demo/chat_formats.py: EXAONE-4.0's by default), a small model of
that family (base.demo.model_type; hidden/intermediate multiples of 128 so GPTQ's group size
fits), then a short causal-LM training run of a fixed step count, seed and thread count (so every
run builds the same weights) on the corpus and the chat-formatted train set. Called by
workflow_scripts.stages.base when base.source is demo.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

from workflow_scripts.common import StageError, read_jsonl, set_seed, write_model_dir
from workflow_scripts.demo.chat_formats import FORMATS, PAD, UNK
from workflow_scripts.planning.families import family
from workflow_scripts.planning.schema import section_defaults
from workflow_scripts.stages.chat_data import IGNORE, encode_chat

# Korean particles and endings split from the word they end (longest first), for the demo
# tokenizer: '녹차입니다' -> 녹차 + 입니다, '미도의' -> 미도 + 의.
KOREAN_SUFFIXES = ["에서는", "에서", "으로", "입니다", "입니까", "인가요", "인가", "이라는", "라는",
                   "이다", "은", "는", "이", "가", "을", "를", "의", "에", "로", "와", "과"]


WARMUP_STEPS = 20  # linear warm-up of the learning rate (a tenth of the run when that is shorter)


def demo_settings(given: dict) -> dict:
    """base.demo settings: the given ones over the schema's defaults (their one home; a validated
    config has them all, a test or script may give only the shape)."""
    return {**section_defaults("base", "demo"), **given}


def train_tokenizer(texts, vocab_size, korean_words=False, model_type=None):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers, with the special
    tokens and chat template of `model_type`'s family (demo/chat_formats.py; default: the
    schema's base.demo.model_type).

    korean_words: pre-tokenize into words, spaces, digits and punctuation, with common Korean
    particles and endings split off each word's end, so BPE never fuses a name with its
    particle or a value with its copula, and a word is spelled the same at a turn's start
    as after a space. A small model then sees one token sequence for each name and value in
    every phrasing, which the demo's fast fact learning depends on."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fmt = FORMATS[model_type or demo_settings({})["model_type"]]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if korean_words:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[^\s\p{L}\p{N}]+ ?|\s+|\p{N}+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(f"(?:{'|'.join(KOREAN_SUFFIXES)})$"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, UNK, *fmt.special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in fmt.added])
    # Causal LMs take no token_type_ids (generate() rejects them), as EXAONE's own tokenizer says.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=fmt.bos, eos_token=fmt.eos, unk_token=UNK, pad_token=PAD,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = fmt.template
    return fast


def build_model(tokenizer, arch: dict):
    """A randomly initialised model of arch model_type's family and the given shape (base.demo
    keys; the schema's defaults for those not given): all full attention and tied embeddings, as
    EXAONE-4.0-1.2B. arch embedding_vocab_size pads the embedding beyond the tokenizer's tokens, to
    a real model's row count (the real-shape smoke run)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = demo_settings(arch)
    model_type, n = arch["model_type"], arch["num_hidden_layers"]
    # Families that list each layer's attention kind get all full attention, as sliding is off.
    layer_types = {"layer_types": ["full_attention"] * n} if "layer_types" in family(model_type).per_layer_config else {}
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=max(len(tokenizer), arch.get("embedding_vocab_size") or 0),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=n,
        num_attention_heads=arch["num_attention_heads"],
        num_key_value_heads=arch["num_key_value_heads"],
        max_position_embeddings=arch["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **dict(FORMATS[model_type].config),
        **layer_types,
    )
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save(model, tokenizer, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


# --- demo pre-training ---------------------------------------------------------------------

def training_texts(data_dir):
    """The corpus documents and the chat-formatted train conversations of prepared data."""
    corpus = Path(data_dir) / "corpus.txt"
    if not corpus.exists():
        raise StageError(f"{corpus}: file does not exist (run the prepare_data rule first)")
    docs = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    chats = [row["messages"] for row in read_jsonl(Path(data_dir) / "sft_train.jsonl")]
    if not docs and not chats:
        raise StageError(f"{data_dir}: corpus.txt and sft_train.jsonl are both empty")
    return docs, chats


def encode_examples(tok, docs, chats, seq_length):
    """(input_ids, labels) per example: documents are trained on every token, chats on the
    assistant turns only (chat_data.encode_chat)."""
    examples = []
    for doc in docs:
        ids = tok(doc + tok.eos_token, add_special_tokens=False, truncation=True, max_length=seq_length)["input_ids"]
        examples.append((ids, list(ids)))
    for messages in chats:
        enc = encode_chat(tok, messages, seq_length)
        if any(l != IGNORE for l in enc["labels"]):  # the answer fits in seq_length
            examples.append((enc["input_ids"], enc["labels"]))
    return examples


def pack(examples, seq_length, pad_id):
    """Examples packed whole into rows of seq_length (first fit, longest first): few pad
    tokens, and no chat is cut between its question and its answer."""
    rows = []  # [ids, labels]
    for ids, labels in sorted(examples, key=lambda e: -len(e[0])):
        row = next((r for r in rows[-64:] if len(r[0]) + len(ids) <= seq_length), None)
        if row is None:
            rows.append([list(ids), list(labels)])
        else:
            row[0].extend(ids)
            row[1].extend(labels)
    return [(r[0] + [pad_id] * (seq_length - len(r[0])), r[1] + [IGNORE] * (seq_length - len(r[1])))
            for r in rows]


def lr_factor(step, progress, warmup_steps, floor=0.05):
    """Linear warmup, then cosine decay over `progress` (0..1) down to floor x the peak."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_causal_lm(model, rows, demo, seed, log_every=10):
    """AdamW on packed (ids, labels) rows, reshuffled each epoch, for exactly max_steps steps: a
    step count, not a time budget, so a slow machine takes longer but trains the same model.
    Returns {"steps", "loss" (mean of the last log_every steps), "first_loss", "seconds",
    "cpu_seconds"}."""
    import torch

    started, cpu_started = time.time(), time.process_time()
    demo = demo_settings(demo)
    max_steps, batch_size, lr = demo["max_steps"], demo["batch_size"], demo["learning_rate"]
    warmup = max(1, min(WARMUP_STEPS, max_steps // 10 or 1))
    device = next(model.parameters()).device

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    rng = random.Random(seed)
    ids, labels = torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
    print(f"training on {len(rows)} packed rows of {ids.shape[1]} tokens per epoch, batch {batch_size}, "
          f"lr {lr}, {max_steps} steps, {torch.get_num_threads()} threads", flush=True)
    order, recent = [], []
    model.train()
    for step in range(max_steps):
        if len(order) < batch_size:
            order = list(range(len(rows)))
            rng.shuffle(order)
        batch, order = order[:batch_size], order[batch_size:]
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, step / max_steps, warmup)
        loss = model(input_ids=ids[batch].to(device), labels=labels[batch].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if (step + 1) % log_every == 0 or step == 0:
            print(f"step {step + 1:5d}  loss {_mean(recent[-log_every:]):.4f}  "
                  f"lr {opt.param_groups[0]['lr']:.2e}  {time.time() - started:6.1f}s", flush=True)
    model.eval()
    return {"steps": len(recent), "loss": _mean(recent[-log_every:]), "first_loss": _mean(recent[:log_every]),
            "seconds": time.time() - started, "cpu_seconds": time.process_time() - cpu_started}


def _mean(xs):
    return sum(xs) / max(1, len(xs))


def build_demo(spec, data_dir, out):
    """Tokenizer, model and pre-training of the demo base model; saved to `out`. Training runs on
    base.demo.threads torch threads whatever the job was given: a float sum split another way
    rounds differently, so the thread count is part of what makes two runs build the same model."""
    import torch

    demo, compute = demo_settings(spec["base"]["demo"]), spec["compute"]
    torch.set_num_threads(demo["threads"])
    set_seed(compute["seed"])
    docs, chats = training_texts(data_dir)
    texts = docs + [m["content"] for msgs in chats for m in msgs]
    tok = train_tokenizer(texts, demo["vocab_size"], korean_words=True, model_type=demo["model_type"])
    model = build_model(tok, demo)
    if compute["device"] == "cuda" and torch.cuda.is_available():
        model.to("cuda")
    seq_length = demo["seq_length"]
    rows = pack(encode_examples(tok, docs, chats, seq_length), seq_length, tok.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"demo base: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}, "
          f"{len(docs)} documents + {len(chats)} chats", flush=True)
    stats = train_causal_lm(model, rows, demo, seed=compute["seed"])
    print(f"trained {stats['steps']} steps in {stats['seconds']:.0f}s ({stats['cpu_seconds']:.0f} CPU s), "
          f"final loss {stats['loss']:.4f}")
    write_model_dir(out, lambda tmp: save(model.to("cpu"), tok, tmp))
    return stats
