"""The demo tokenizer's chat format per model family: its special tokens and a chat template that
renders turns as that family's own template does (non-reasoning mode, no tool calls, no default
system prompt). The demo builds its base model in any family of workflow_scripts/planning/families.py,
so that SFT label masking, answer parsing and serving are exercised with each family's format.

Every template renders the turns before an assistant turn the same way inside the whole
conversation (stages/chat_data.py relies on it): a reasoning model's empty think block is
therefore rendered on every assistant turn, as on the generation prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

PAD, UNK = "[PAD]", "[UNK]"  # the demo tokenizer's own padding and unknown tokens, in every family
EMPTY_THINK = "<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class ChatFormat:
    special: tuple  # special tokens besides PAD / UNK (never split, skipped when decoding)
    eos: str  # ends an assistant turn: generation stops there
    template: str
    bos: str | None = None
    added: tuple = ()  # plain added tokens, kept in decoded text (<think>, </think>)
    # Config values the demo model is built with (sliding windows off: a tiny model, short texts).
    config: tuple = ()


def _turns(turn: str, assistant: str, generation: str) -> str:
    """A template: `turn` for system / user messages, `assistant` for assistant ones (both with
    {role} and {content} as Jinja expressions), then the generation prompt."""
    return ("{% for message in messages %}{% if message['role'] == 'assistant' %}" + assistant
            + "{% else %}" + turn + "{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}" + generation + "{% endif %}")


ROLE, CONTENT = "{{ message['role'] }}", "{{ message['content'] }}"

FORMATS = {
    # EXAONE 4.0: [|role|]\n...[|endofturn|]\n; an empty think block opens each assistant turn.
    "exaone4": ChatFormat(
        special=("[BOS]", "[|endofturn|]", "[|system|]", "[|user|]", "[|assistant|]"), eos="[|endofturn|]",
        bos="[BOS]", added=("<think>", "</think>"),
        template=_turns(f"[|{ROLE}|]\n{CONTENT}[|endofturn|]\n",
                        f"[|assistant|]\n{EMPTY_THINK}{CONTENT}[|endofturn|]\n",
                        f"[|assistant|]\n{EMPTY_THINK}"),
        config=(("sliding_window", None),)),
    # Qwen2.5: ChatML.
    "qwen2": ChatFormat(
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>",
        template=_turns(f"<|im_start|>{ROLE}\n{CONTENT}<|im_end|>\n",
                        f"<|im_start|>assistant\n{CONTENT}<|im_end|>\n", "<|im_start|>assistant\n"),
        config=(("use_sliding_window", False),)),
    # Qwen3: ChatML; with enable_thinking false an empty think block opens the answer.
    "qwen3": ChatFormat(
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>", added=("<think>", "</think>"),
        template=_turns(f"<|im_start|>{ROLE}\n{CONTENT}<|im_end|>\n",
                        f"<|im_start|>assistant\n{EMPTY_THINK}{CONTENT}<|im_end|>\n",
                        f"<|im_start|>assistant\n{EMPTY_THINK}"),
        config=(("use_sliding_window", False),)),
    # Llama 3: header ids around the role, <|eot_id|> after each turn.
    "llama": ChatFormat(
        special=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        eos="<|eot_id|>", bos="<|begin_of_text|>",
        template="{{ bos_token }}" + _turns(
            f"<|start_header_id|>{ROLE}<|end_header_id|>\n\n{CONTENT}<|eot_id|>",
            f"<|start_header_id|>assistant<|end_header_id|>\n\n{CONTENT}<|eot_id|>",
            "<|start_header_id|>assistant<|end_header_id|>\n\n")),
    # Mistral v0.2: [INST] user [/INST]answer</s>; no system role, so a system message is put
    # in front of the first user turn.
    "mistral": ChatFormat(
        special=("<s>", "</s>", "[INST]", "[/INST]"), eos="</s>", bos="<s>",
        template=("{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
                  "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
                  "{% elif message['role'] == 'user' %}[INST] {{ ns.system }}" + CONTENT
                  + " [/INST]{% set ns.system = '' %}"
                  "{% else %}" + CONTENT + "</s>{% endif %}{% endfor %}"),
        config=(("sliding_window", None),)),
}
