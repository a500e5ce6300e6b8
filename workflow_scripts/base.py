"""The base model: an EXAONE-shaped model built and trained here (demo) or taken from the hub.

Demo: a BPE tokenizer trained with `tokenizers` on the generated corpus, an EXAONE-style chat
template, a small Exaone4ForCausalLM (hidden/intermediate multiples of 128 so GPTQ's group
size fits), then a short causal-LM training run on the corpus and the chat-formatted train set.

    python -m workflow_scripts.base --spec JSON --data results/data --out results/models/base
"""
from __future__ import annotations

from pathlib import Path

# EXAONE 4.0's chat format: [|role|]content[|endofturn|], generation opens [|assistant|].
SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]", "[|system|]", "[|user|]", "[|assistant|]"]
PAD, BOS, UNK, EOT = "[PAD]", "[BOS]", "[UNK]", "[|endofturn|]"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "[|{{ message['role'] }}|]{{ message['content'] }}[|endofturn|]\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}[|assistant|]{% endif %}"
)


def train_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOT, unk_token=UNK, pad_token=PAD,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, arch: dict):
    """A randomly initialised Exaone4ForCausalLM of the given shape (all full attention,
    tied embeddings, as EXAONE-4.0-1.2B)."""
    import torch
    from transformers import Exaone4Config, Exaone4ForCausalLM

    n = arch["num_hidden_layers"]
    cfg = Exaone4Config(
        vocab_size=len(tokenizer),
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=n,
        num_attention_heads=arch["num_attention_heads"],
        num_key_value_heads=arch["num_key_value_heads"],
        max_position_embeddings=arch.get("max_position_embeddings", 2048),
        tie_word_embeddings=True,
        sliding_window=None,
        layer_types=["full_attention"] * n,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(42)
    model = Exaone4ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save(model, tokenizer, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
