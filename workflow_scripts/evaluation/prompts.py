"""Benchmark prompt templates, shared by evaluation (serve env) and the demo data/base training,
so the demo model learns the very format it is evaluated in. Stdlib only."""
from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"

TEMPLATES = {
    "mcqa_ko": (
        "다음 질문을 읽고 보기 중에서 정답을 고르세요. 정답의 알파벳만 답하세요.\n\n"
        "질문: {question}\n{options}"
    ),
    "mcqa_en": (
        "Read the question and choose the correct option. Answer with the option letter.\n\n"
        "Question: {question}\n{options}"
    ),
    "longqa_ko": (
        "다음 문서들을 읽고 질문에 짧게 답하세요.\n\n{context}\n\n질문: {question}"
    ),
    "longqa_en": (
        "Read the documents and answer the question briefly.\n\n{context}\n\nQuestion: {question}"
    ),
}


def _template(name):
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt_template {name!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def mcqa_prompt(item, template="mcqa_ko"):
    """The user message of an MCQA item: question and lettered options (A. ..., B. ...)."""
    options = "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(item["options"]))
    return _template(template).format(question=item["question"], options=options)


def mcqa_answer(item):
    """The reference answer text for training: '정답: C' for 1-based answer 3."""
    return f"정답: {LETTERS[item['answer'] - 1]}"


# The placeholders of a set's own long-QA instruction (Ko-LongRAG's `prompt` field).
_PLACEHOLDER = re.compile(r"\{(titles|context|question)\}")


def own_longqa_prompt(prompt) -> bool:
    """Whether a row's `prompt` is an instruction to fill (it holds {context} and {question});
    a prompt without them is not used (its context could not be truncated)."""
    return isinstance(prompt, str) and "{context}" in prompt and "{question}" in prompt


def longqa_prompt_source(item) -> str:
    """'row' when the item's own instruction builds its prompt, 'template' otherwise."""
    return "row" if own_longqa_prompt(item.get("prompt")) else "template"


def longqa_prompt(item, template="longqa_ko", context=None):
    """The user message of a long-context QA item: the item's own instruction when it has one
    (the set's official setup, titles joined by ', '), else `template`; `context` overrides a
    truncated context. Placeholders are filled in one pass, so braces in the text stay as they are."""
    values = {"context": item["context"] if context is None else context, "question": item["question"],
              "titles": ", ".join(item.get("titles") or [])}
    if longqa_prompt_source(item) == "row":
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], item["prompt"])
    return _template(template).format(context=values["context"], question=values["question"])


# Teacher data from documents (workflow_scripts/stages/teacher.py): the teacher reads a passage and writes
# one question with its answer, in the format teacher_filters.parse_qa reads back.
TEACHER_TEMPLATES = {
    "qa_from_passage_ko": (
        "다음 글을 읽고, 글의 내용만으로 답할 수 있는 질문 하나와 그 답을 한국어로 쓰세요. "
        "반드시 아래 형식으로만 쓰세요.\n질문: <질문>\n답변: <답변>\n\n글:\n{passage}"
    ),
    "qa_from_passage_en": (
        "Read the passage and write one question that it answers, with the answer. "
        "Use exactly this format.\nQuestion: <question>\nAnswer: <answer>\n\nPassage:\n{passage}"
    ),
}


def document_prompt(passage, template="qa_from_passage_ko"):
    """The user message asking the teacher for a question + answer pair from one passage."""
    if template not in TEACHER_TEMPLATES:
        raise KeyError(f"unknown teacher template {template!r}; expected one of {sorted(TEACHER_TEMPLATES)}")
    return TEACHER_TEMPLATES[template].format(passage=passage)
