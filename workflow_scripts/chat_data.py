"""Chat conversations -> token ids with labels on the assistant tokens only.

Works for any chat template that renders prefixes consistently: the characters an assistant
turn adds are those between the template of the turns before it (with the generation prompt)
and the template including it; tokens whose characters fall there are trained on.
calibration_set: the chat-templated calibration text that quantize and prune run through the model.
"""
from __future__ import annotations

from workflow_scripts.common import StageError, chat_text, read_jsonl

IGNORE = -100


def assistant_spans(tok, messages):
    """The full chat text and the (start, end) character spans of the assistant turns."""
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = len(tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
        end = len(tok.apply_chat_template(messages[: i + 1], tokenize=False))
        spans.append((start, end))
    return tok.apply_chat_template(messages, tokenize=False), spans


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
    """A collator padding input_ids/attention_mask/labels to the batch's longest row."""
    import torch

    def fn(batch):
        n = max(len(b["input_ids"]) for b in batch)
        pad = tok.pad_token_id
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for b in batch:
            k = n - len(b["input_ids"])
            out["input_ids"].append(b["input_ids"] + [pad] * k)
            out["attention_mask"].append(b["attention_mask"] + [0] * k)
            out["labels"].append(b["labels"] + [IGNORE] * k)
        return {key: torch.tensor(v) for key, v in out.items()}

    return fn


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
