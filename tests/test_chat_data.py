"""The assistant-only label mask every training loss depends on (workflow_scripts/stages/chat_data.py)."""
import copy

import pytest

from workflow_scripts.common import StageError
from workflow_scripts.stages.chat_data import IGNORE, assistant_spans, collate, encode_chat

CHAT = [{"role": "user", "content": "서울의 상징색은?"},
        {"role": "assistant", "content": "빨강입니다."},
        {"role": "user", "content": "부산은?"},
        {"role": "assistant", "content": "파랑입니다."}]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_labels_cover_exactly_the_assistant_turns(tok):
    enc = encode_chat(tok, CHAT, 512)
    assert enc["input_ids"] == tok(tok.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)["input_ids"]
    trained = tok.decode([t for t, l in zip(enc["input_ids"], enc["labels"]) if l != IGNORE])
    masked = tok.decode([t for t, l in zip(enc["input_ids"], enc["labels"]) if l == IGNORE])
    # The answers and the end-of-turn token the model must learn to emit; nothing of the users, nor
    # the empty think block the generation prompt already holds, nor the newline after the turn.
    assert trained == "빨강입니다.[|endofturn|]파랑입니다.[|endofturn|]"
    assert "서울" not in trained and "부산" not in trained
    assert "서울의 상징색은?" in masked and "부산은?" in masked
    assert all(l in (IGNORE, t) for t, l in zip(enc["input_ids"], enc["labels"]))


def test_truncation_keeps_the_mask_aligned(tok):
    full, short = encode_chat(tok, CHAT, 512), encode_chat(tok, CHAT, 12)
    assert len(short["input_ids"]) == 12 and short["labels"] == full["labels"][:12]


def test_a_template_that_rewrites_history_is_refused(tok):
    rewriting = copy.copy(tok)
    # Earlier assistant turns are shortened inside a longer conversation (like templates that
    # drop earlier reasoning): the prefix no longer matches, and the labels would shift.
    rewriting.chat_template = (
        "{% for m in messages %}[|{{ m.role }}|]"
        "{% if m.role == 'assistant' and not loop.last %}{{ m.content[:1] }}{% else %}{{ m.content }}{% endif %}"
        "[|endofturn|]{% endfor %}{% if add_generation_prompt %}[|assistant|]{% endif %}")
    with pytest.raises(StageError, match="rewrites history"):
        assistant_spans(rewriting, CHAT)


def test_collate_pads_labels_with_ignore(tok):
    rows = [encode_chat(tok, CHAT, 512), encode_chat(tok, CHAT[:2], 512)]
    batch = collate(tok)(rows)
    n = len(rows[0]["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, n)
    k = len(rows[1]["input_ids"])
    assert batch["labels"][1, k:].eq(IGNORE).all() and batch["attention_mask"][1, k:].eq(0).all()
    assert batch["input_ids"][1, k:].eq(tok.pad_token_id).all()
    assert batch["labels"][1, :k].tolist() == rows[1]["labels"]
