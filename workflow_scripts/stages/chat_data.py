"""Chat conversations -> token ids with labels on the assistant tokens only.

Works for any chat template that renders prefixes consistently: the characters an assistant
turn adds are those between the template of the turns before it (with the generation prompt)
and the template including it, up to and including its end-of-turn token (the eos token: what the
template puts after it, e.g. a newline, the model never generates); tokens whose characters fall
there are trained on. So a scaffold the generation prompt already holds (EXAONE 4.0's empty
`<think>` block) is context, not a label. A template
that renders earlier turns differently inside the full conversation (one that rewrites history,
e.g. drops earlier reasoning) would shift every label, so that is checked and refused.
calibration_set: the calibration text that quantize and prune run through the model (chats
chat-templated, optionally mixed with plain text).
"""
from __future__ import annotations

import random
from pathlib import Path

from workflow_scripts.common import SEED, StageError, chat_text, read_jsonl
from workflow_scripts.planning.config import CALIB_SOURCES

IGNORE = -100


def assistant_spans(tok, messages):
    """The full chat text and the (start, end) character spans of the assistant turns: from the
    end of the generation prompt to the end of the turn's last eos token (or of the turn)."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(upto)):
            raise StageError(f"the chat template renders the turns before message {i} differently inside the "
                             "whole conversation (it rewrites history): assistant labels cannot be located")
        end = len(upto)
        if tok.eos_token and tok.eos_token in upto[len(before):]:
            end = upto.rindex(tok.eos_token) + len(tok.eos_token)
        spans.append((len(before), end))
    return full, spans


def encode_chat(tok, messages, max_len):
    """{"input_ids", "attention_mask", "labels"}: labels are IGNORE outside assistant turns."""
    text, spans = assistant_spans(tok, messages)
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False,
              truncation=True, max_length=max_len)
    labels = [
        tid if any(s <= a < e for s, e in spans) else IGNORE
        for tid, (a, _b) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def chat_dataset(tok, rows, max_len):
    """A datasets.Dataset of encoded conversations (rows in the prepared-data schema)."""
    from datasets import Dataset

    encoded = [encode_chat(tok, r["messages"], max_len) for r in rows]
    encoded = [e for e in encoded if any(l != IGNORE for l in e["labels"])]
    return Dataset.from_list(encoded)


def collate(tok):
    """Pads input_ids / attention_mask with the tokenizer, labels with IGNORE, to the longest row."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE, return_tensors="pt")


def calibration_set(tok, paths, n, max_len, mix=None):
    """n calibration texts, tokenized, truncated to max_len and unpadded: a datasets.Dataset of
    input_ids / attention_mask. `paths`: one prepared file or several; `mix`: {source: weight}
    (config.CALIB_SOURCES names, matched to `paths` by file name), drawing round(n * share)
    from each source. Without a mix, the first n conversations of the (single) file."""
    from datasets import Dataset

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    texts = []
    for path, count in source_counts(paths, n, mix):
        texts += source_texts(tok, path, count)
    if mix and len(mix) > 1:
        random.Random(SEED).shuffle(texts)  # sources interleaved, not in blocks
    # The chat template already carries the special tokens the model was trained with.
    enc = tok(texts, max_length=max_len, truncation=True, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def source_counts(paths, n, mix):
    """[(path, rows to draw)]: all n from the first path without a mix, else n split by weight."""
    if not mix:
        return [(paths[0], n)]
    by_name = {p.name: p for p in paths}
    total = sum(mix.values())
    counts, left = [], n
    for i, (source, weight) in enumerate(sorted(mix.items())):
        file = CALIB_SOURCES[source]
        if file not in by_name:
            raise StageError(f"calibration_mix source {source!r} needs {file}, which was not given")
        count = left if i == len(mix) - 1 else min(left, round(n * weight / total))
        counts.append((by_name[file], count))
        left -= count
    return counts


def source_texts(tok, path, count):
    """The first `count` rows of a prepared file as model input text: conversations (JSONL)
    chat-templated as the model is served, plain text (.txt, one document a line) as is."""
    if count <= 0:
        return []
    if path.suffix == ".txt":
        if not path.exists():
            raise StageError(f"{path}: file does not exist")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    else:
        texts = [chat_text(tok, r["messages"]) for r in read_jsonl(path)[:count]]
    if not texts:
        hint = " (data preparation fills it only for the demo)" if path.name == CALIB_SOURCES["corpus"] else ""
        raise StageError(f"{path}: no calibration text{hint}")
    return texts
