"""Chat conversations -> token ids with labels on the assistant tokens only.

Works for any chat template that renders prefixes consistently: the characters an assistant
turn adds are those between the template of the turns before it (with the generation prompt)
and the template including it; tokens whose characters fall there are trained on. A template
that renders earlier turns differently inside the full conversation (one that rewrites history,
e.g. drops earlier reasoning) would shift every label, so that is checked and refused.
calibration_set: the chat-templated calibration text that quantize and prune run through the model.
"""
from __future__ import annotations

from workflow_scripts.common import StageError, chat_text, read_jsonl

IGNORE = -100


def assistant_spans(tok, messages):
    """The full chat text and the (start, end) character spans of the assistant turns."""
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
        spans.append((len(before), len(upto)))
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


def calibration_set(tok, path, n, max_len):
    """The first n conversations of a calibration JSONL, chat-templated (the text the model is
    served) and tokenized, truncated to max_len and unpadded: a datasets.Dataset of
    input_ids / attention_mask."""
    from datasets import Dataset

    rows = read_jsonl(path)[:n]
    if not rows:
        raise StageError(f"{path}: no calibration conversations")
    texts = [chat_text(tok, r["messages"]) for r in rows]
    # The chat template already carries the special tokens the model was trained with.
    enc = tok(texts, max_length=max_len, truncation=True, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
