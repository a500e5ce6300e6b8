"""The demo's data, invented by code (seed 42): a small world of fictional cities, people and
items with attributes, stated in Korean and English, and every set the workflow needs,
written in the raw field layout of the real sets so the same loading code reads both.

    corpus.txt     pre-training documents, one per line (Korean and English statements)
    sft.jsonl      MANTA-1M layout: {"conversations": [{"role", "content"}, ...]}
    mcqa.jsonl     KMMLU layout: {"question", "options", "solution": "3"} (1-based string)
    longqa.jsonl   Ko-LongRAG layout: {"context", "question", "answer", "titles", "prompt" (with placeholders)}
    mtbench.jsonl  KoMT-Bench layout: {"question_id", "category", "turns", "reference": [] or 2 strings}

The MCQA test items are about facts the corpus and the SFT chats teach; the SFT set holds
MCQA-format chats (the evaluation prompt, answer '정답: C') for the same facts with the test
item's option list (same order) but other question wordings, never the test question. So the
demo MCQA measures whether a model still recalls each fact's answer from a new wording: a
memorisation test, which is what a 1M-parameter model can learn in a few CPU minutes (matching a
recalled value to a shuffled option letter it does not learn in that budget). Long QA is taught
by many reading chats on short contexts (Sizes; the variants tried are in docs/metrics.md).

    python -m workflow_scripts.demo.data --out results/data/demo_raw
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.common import SEED, AtomicWriter
from workflow_scripts.evaluation import prompts

FILES = {"sft": "sft.jsonl", "mcqa": "mcqa.jsonl", "longqa": "longqa.jsonl",
         "mtbench": "mtbench.jsonl", "corpus": "corpus.txt"}


@dataclass(frozen=True)
class Sizes:
    """How big the invented world and each set are."""

    cities: int = 10
    people: int = 6
    items: int = 6
    corpus_copies: int = 3          # each corpus document 3 times: a fact needs more exposures
    mcqa_train_per_fact: int = 12   # MCQA-format SFT chats per fact (other question wordings)
    qa_en_share: float = 0.5       # English QA chats per fact
    two_turn: int = 60
    longqa_train: int = 300         # reading chats, each on a context of 1-3 passages:
    longqa_train_passages: tuple = (1, 2, 3)  # 60 on 2-3 passages left the base guessing
    longqa_test: int = 40
    longqa_passages: int = 3       # passages in a test context (one holds the answer): the
                                   # whole prompt fits the 256-token rows the base trains on


# --- vocabulary of the invented world: (Korean, English) --------------------------------

SYLLABLES = [("라", "ra"), ("모", "mo"), ("벨", "bel"), ("타", "ta"), ("린", "rin"), ("소", "so"),
             ("카", "ka"), ("도", "do"), ("미", "mi"), ("세", "se"), ("온", "on"), ("하", "ha"),
             ("루", "ru"), ("네", "ne"), ("피", "pi"), ("진", "jin"), ("바", "ba"), ("엘", "el"),
             ("투", "tu"), ("간", "gan"), ("무", "mu"), ("레", "re"), ("호", "ho"), ("솔", "sol"),
             ("키", "ki"), ("나", "na"), ("윤", "yun"), ("다", "da")]
FAMILY = [("한", "Han"), ("서", "Seo"), ("유", "Yu"), ("마", "Ma"), ("지", "Ji"), ("연", "Yeon"),
          ("강", "Kang"), ("백", "Baek")]
COUNTRIES = [("아르벤", "Arven"), ("벨로시아", "Belosia"), ("카르도", "Kardo"), ("미렌티아", "Mirentia"),
             ("솔바르", "Solvar"), ("테우린", "Teurin"), ("노바렌", "Novaren"), ("펠리온", "Pelion")]
COLORS = [("빨강", "red"), ("파랑", "blue"), ("초록", "green"), ("노랑", "yellow"), ("보라", "purple"),
          ("주황", "orange"), ("검정", "black"), ("하양", "white"), ("분홍", "pink"), ("회색", "gray")]
FOODS = [("배", "pears"), ("포도", "grapes"), ("치즈", "cheese"), ("쌀", "rice"), ("녹차", "green tea"),
         ("꿀", "honey"), ("소금", "salt"), ("감자", "potatoes")]
# (no value ends in a syllable that is also a particle: the demo tokenizer splits those off)
JOBS = [("기자", "reporter"), ("요리사", "cook"), ("의사", "doctor"), ("교사", "teacher"), ("농부", "farmer"),
        ("목수", "carpenter"), ("어부", "fisher"), ("약사", "pharmacist")]
ITEM_KINDS = [("시계", "clock"), ("램프", "lamp"), ("우산", "umbrella"), ("가방", "bag"),
              ("찻잔", "teacup"), ("자전거", "bicycle")]


def _numbers(lo, hi, ko_unit, en_fmt):
    return [(f"{n}{ko_unit}", en_fmt.format(n=n)) for n in range(lo, hi + 1)]


# --- Korean particles: the form depends on whether the word ends in a final consonant ----

def _batchim(word):
    c = word[-1]
    if "가" <= c <= "힣":
        return (ord(c) - 0xAC00) % 28
    return 8 if c in "013678" else 0  # digits read in Korean: 영 일 삼 육 칠 팔 end in one


def _particles(prefix, word):
    b = _batchim(word)
    return {
        prefix: word,
        f"{prefix}_eun": word + ("은" if b else "는"),
        f"{prefix}_i": word + ("이" if b else "가"),
        f"{prefix}_eul": word + ("을" if b else "를"),
        f"{prefix}_ro": word + ("으로" if b and b != 8 else "로"),  # ㄹ (index 8) takes 로
    }


# --- attributes: how each is stated, asked and offered as options ------------------------
# {e}/{v}: Korean entity/value (with particle forms e_eun, e_i, e_eul, v_i, v_ro ...);
# {E}/{V}: English.

ATTRS = {
    "city.country": dict(
        ko=["{e_eun} {v}에 있는 도시입니다.", "{e_i} 속한 나라는 {v}입니다.", "{e_eun} {v}의 도시입니다."],
        en=["{E} is a city in {V}.", "The city of {E} belongs to {V}."],
        q_ko=["{e_eun} 어느 나라에 있나요?", "{e_i} 속한 나라는 어디인가요?"],
        q_en=["Which country is {E} in?"],
        a_ko="{e_eun} {v}에 있습니다.", a_en="{E} is in {V}.",
        mcqa=["{e_eun} 어느 나라에 있는 도시인가?", "다음 중 {e_i} 속한 나라는?"]),
    "city.color": dict(
        ko=["{e}의 상징색은 {v}입니다.", "{e_eun} {v_eul} 상징색으로 씁니다."],
        en=["The symbol color of {E} is {V}.", "{E} uses {V} as its color."],
        q_ko=["{e}의 상징색은 무엇인가요?", "{e_eun} 어떤 색을 상징색으로 쓰나요?"],
        q_en=["What is the symbol color of {E}?"],
        a_ko="{e}의 상징색은 {v}입니다.", a_en="The symbol color of {E} is {V}.",
        mcqa=["{e}의 상징색은 무엇인가?", "다음 중 {e}의 상징색은?"]),
    "city.food": dict(
        ko=["{e}의 특산물은 {v}입니다.", "{e}에서는 {v_i} 유명합니다."],
        en=["The specialty of {E} is {V}.", "{E} is famous for {V}."],
        q_ko=["{e}의 특산물은 무엇인가요?", "{e}에서는 무엇이 유명한가요?"],
        q_en=["What is the specialty of {E}?"],
        a_ko="{e}의 특산물은 {v}입니다.", a_en="The specialty of {E} is {V}.",
        mcqa=["{e}의 특산물은 무엇인가?", "다음 중 {e}에서 유명한 것은?"]),
    "city.founder": dict(
        ko=["{e_eun} {v_i} 세운 도시입니다.", "{e}의 설립자는 {v}입니다."],
        en=["{E} was founded by {V}.", "{V} founded the city of {E}."],
        q_ko=["{e_eul} 세운 사람은 누구인가요?", "{e}의 설립자는 누구인가요?"],
        q_en=["Who founded {E}?"],
        a_ko="{e}의 설립자는 {v}입니다.", a_en="{E} was founded by {V}.",
        mcqa=["{e_eul} 세운 사람은 누구인가?", "다음 중 {e}의 설립자는?"]),
    "city.districts": dict(
        ko=["{e}에는 구역이 {v} 있습니다.", "{e}의 구역 수는 {v}입니다."],
        en=["{E} has {V} districts.", "There are {V} districts in {E}."],
        q_ko=["{e}에는 구역이 몇 개 있나요?", "{e}의 구역 수는 얼마인가요?"],
        q_en=["How many districts does {E} have?"],
        a_ko="{e}에는 구역이 {v} 있습니다.", a_en="{E} has {V} districts.",
        mcqa=["{e}의 구역은 모두 몇 개인가?", "다음 중 {e}의 구역 수는?"]),
    "person.hometown": dict(
        ko=["{e}의 고향은 {v}입니다.", "{e_eun} {v}에서 태어났습니다."],
        en=["{E} was born in {V}.", "The hometown of {E} is {V}."],
        q_ko=["{e}의 고향은 어디인가요?", "{e_eun} 어디에서 태어났나요?"],
        q_en=["Where was {E} born?"],
        a_ko="{e}의 고향은 {v}입니다.", a_en="{E} was born in {V}.",
        mcqa=["{e}의 고향은 어디인가?", "다음 중 {e_i} 태어난 곳은?"]),
    "person.job": dict(
        ko=["{e}의 직업은 {v}입니다.", "{e_eun} {v_ro} 일합니다."],
        en=["{E} works as a {V}.", "The job of {E} is {V}."],
        q_ko=["{e}의 직업은 무엇인가요?", "{e_eun} 무슨 일을 하나요?"],
        q_en=["What does {E} do for a living?"],
        a_ko="{e}의 직업은 {v}입니다.", a_en="{E} works as a {V}.",
        mcqa=["{e}의 직업은 무엇인가?", "다음 중 {e}의 직업은?"]),
    "person.color": dict(
        ko=["{e_i} 가장 좋아하는 색은 {v}입니다.", "{e_eun} {v_eul} 좋아합니다."],
        en=["The favorite color of {E} is {V}.", "{E} likes {V} best."],
        q_ko=["{e_i} 좋아하는 색은 무엇인가요?", "{e_eun} 어떤 색을 좋아하나요?"],
        q_en=["What is the favorite color of {E}?"],
        a_ko="{e_i} 가장 좋아하는 색은 {v}입니다.", a_en="The favorite color of {E} is {V}.",
        mcqa=["{e_i} 가장 좋아하는 색은?", "다음 중 {e_i} 좋아하는 색은?"]),
    "person.age": dict(
        ko=["{e}의 나이는 {v}입니다.", "{e_eun} 올해 {v}입니다."],
        en=["{E} is {V} years old.", "The age of {E} is {V}."],
        q_ko=["{e}의 나이는 몇 살인가요?", "{e_eun} 올해 몇 살인가요?"],
        q_en=["How old is {E}?"],
        a_ko="{e}의 나이는 {v}입니다.", a_en="{E} is {V} years old.",
        mcqa=["{e}의 나이는 몇 살인가?", "다음 중 {e}의 나이는?"]),
    "item.maker": dict(
        ko=["{e_eun} {v_i} 만들었습니다.", "{e}의 제작자는 {v}입니다."],
        en=["The {E} was made by {V}.", "{V} made the {E}."],
        q_ko=["{e_eul} 만든 사람은 누구인가요?", "{e}의 제작자는 누구인가요?"],
        q_en=["Who made the {E}?"],
        a_ko="{e}의 제작자는 {v}입니다.", a_en="The {E} was made by {V}.",
        mcqa=["{e_eul} 만든 사람은 누구인가?", "다음 중 {e}의 제작자는?"]),
    "item.color": dict(
        ko=["{e}의 색깔은 {v}입니다.", "{e_eun} {v} 색입니다."],
        en=["The {E} is {V}.", "The color of the {E} is {V}."],
        q_ko=["{e}의 색깔은 무엇인가요?", "{e_eun} 무슨 색인가요?"],
        q_en=["What color is the {E}?"],
        a_ko="{e}의 색깔은 {v}입니다.", a_en="The {E} is {V}.",
        mcqa=["{e}의 색깔은 무엇인가?", "다음 중 {e}의 색깔은?"]),
    "item.price": dict(
        ko=["{e}의 가격은 {v}입니다.", "{e_eun} {v}에 팔립니다."],
        en=["The {E} costs {V} gold.", "The price of the {E} is {V} gold."],
        q_ko=["{e}의 가격은 얼마인가요?", "{e_eun} 얼마에 팔리나요?"],
        q_en=["How much does the {E} cost?"],
        a_ko="{e}의 가격은 {v}입니다.", a_en="The {E} costs {V} gold.",
        mcqa=["{e}의 가격은 얼마인가?", "다음 중 {e}의 가격은?"]),
}


@dataclass(frozen=True)
class Fact:
    attr: str
    entity: tuple  # (ko, en)
    value: tuple   # (ko, en)
    pool: tuple    # every value this attribute can take, for distractors


def _fields(fact):
    return {**_particles("e", fact.entity[0]), **_particles("v", fact.value[0]),
            "E": fact.entity[1], "V": fact.value[1]}


def _say(template, fact):
    return template.format(**_fields(fact))


# --- the world ---------------------------------------------------------------------------

def _names(rng, n, make, taken):
    out = []
    while len(out) < n:
        name = make()
        if name[0] not in taken:
            taken.add(name[0])
            out.append(name)
    return out


def build_world(rng, sizes):
    """Entities and their facts: a list of Fact, grouped by entity in creation order."""
    taken = {c[0] for c in COUNTRIES}

    def two_syllables():
        (a, ra), (b, rb) = rng.sample(SYLLABLES, 2)
        return a + b, (ra + rb).capitalize()

    def person():
        (f, rf), (a, ra), (b, rb) = rng.choice(FAMILY), *rng.sample(SYLLABLES, 2)
        return f + a + b, f"{rf} {(ra + rb).capitalize()}"

    def item():
        (n, rn), (k, rk) = two_syllables(), rng.choice(ITEM_KINDS)
        return f"{n} {k}", f"{rn} {rk}"

    cities = _names(rng, sizes.cities, two_syllables, taken)
    people = _names(rng, sizes.people, person, taken)
    items = _names(rng, sizes.items, item, taken)
    pools = {
        "city.country": COUNTRIES, "city.color": COLORS, "city.food": FOODS,
        "city.founder": people, "city.districts": _numbers(3, 40, "개", "{n}"),
        "person.hometown": cities, "person.job": JOBS, "person.color": COLORS,
        "person.age": _numbers(20, 79, "살", "{n}"),
        "item.maker": people, "item.color": COLORS, "item.price": _numbers(10, 99, "골드", "{n}"),
    }
    facts = []
    for kind, entities in (("city", cities), ("person", people), ("item", items)):
        for ent in entities:
            for attr in (a for a in ATTRS if a.startswith(kind + ".")):
                pool = tuple(p for p in pools[attr] if p != ent)
                facts.append(Fact(attr, ent, rng.choice(pool), pool))
    return facts


def _by_entity(facts):
    out = {}
    for f in facts:
        out.setdefault(f.entity, []).append(f)
    return out


def _paragraph(rng, facts, lang):
    """One passage stating every fact of an entity, each in a randomly chosen phrasing."""
    return " ".join(_say(rng.choice(ATTRS[f.attr][lang]), f) for f in facts)


# --- the sets ----------------------------------------------------------------------------

def make_corpus(rng, facts, copies=1):
    """Pre-training documents: each fact in every phrasing and a passage per entity, `copies` times."""
    docs = [_say(t, f) for f in facts for lang in ("ko", "en") for t in ATTRS[f.attr][lang]]
    for ent_facts in _by_entity(facts).values():
        for lang in ("ko", "ko", "en"):
            docs.append(_paragraph(rng, rng.sample(ent_facts, len(ent_facts)), lang))
    rng.shuffle(docs)
    return docs * copies


def _mcqa_options(rng, fact):
    """A fact's option list: its value and three distractors from the same pool, in a fixed
    shuffled order. Train chats and the test item share it, so the tiny demo model can learn
    each fact's answer letter; they differ in the question's wording."""
    others = [p for p in fact.pool if p != fact.value]
    options = [fact.value[0], *(d[0] for d in rng.sample(others, 3))]
    rng.shuffle(options)
    return options


def make_mcqa(rng, facts, per_fact):
    """Test items (one per fact, the attribute's first question wording) and MCQA-format
    training chats with the other wordings (never the test item's question)."""
    test, train = [], []
    for i, fact in enumerate(facts):
        options = _mcqa_options(rng, fact)
        answer = options.index(fact.value[0]) + 1
        test_q, *train_qs = ATTRS[fact.attr]["mcqa"] + ATTRS[fact.attr]["q_ko"]
        test.append({"id": f"demo-mcqa-{i:04d}", "question": _say(test_q, fact),
                     "options": options, "solution": str(answer)})
        for made in range(per_fact):
            question = _say(train_qs[made % len(train_qs)], fact)
            chat = {"question": question, "options": options, "answer": answer}
            train.append(_chat([prompts.mcqa_prompt(chat, "mcqa_ko"), prompts.mcqa_answer(chat)]))
    return test, train


def _chat(turns, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for i, text in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return {"conversations": msgs}


SYSTEM_PROMPTS = [None, None, None, "당신은 친절한 도우미입니다.", "You are a helpful assistant."]
GREETINGS = [
    ("안녕하세요.", "안녕하세요! 무엇을 도와드릴까요?"),
    ("고마워요.", "천만에요. 더 궁금한 것이 있으면 물어보세요."),
    ("Hello!", "Hello! How can I help you?"),
    ("Thank you.", "You are welcome."),
    ("자기소개를 해 주세요.", "저는 도시와 사람과 물건에 대해 답하는 작은 도우미입니다."),
]


def make_qa_chats(rng, facts, sizes):
    """Question/answer chats: one Korean per fact, some English, two-turn, entity summaries."""
    chats = []
    for f in facts:
        a = ATTRS[f.attr]
        chats.append(_chat([_say(rng.choice(a["q_ko"]), f), _say(a["a_ko"], f)],
                           rng.choice(SYSTEM_PROMPTS)))
        if rng.random() < sizes.qa_en_share:
            chats.append(_chat([_say(rng.choice(a["q_en"]), f), _say(a["a_en"], f)]))
    by_entity = _by_entity(facts)
    entities = list(by_entity)
    for _ in range(sizes.two_turn):
        f1, f2 = rng.sample(by_entity[rng.choice(entities)], 2)
        a1, a2 = ATTRS[f1.attr], ATTRS[f2.attr]
        chats.append(_chat([_say(rng.choice(a1["q_ko"]), f1), _say(a1["a_ko"], f1),
                            _say(rng.choice(a2["q_ko"]), f2), _say(a2["a_ko"], f2)]))
    for ent, ent_facts in by_entity.items():
        chats.append(_chat([f"{_particles('e', ent[0])['e']}에 대해 알려 주세요.",
                            _paragraph(rng, ent_facts, "ko")]))
    for _ in range(3):
        chats.extend(_chat(list(g)) for g in GREETINGS)
    return chats


def _longqa(rng, fact, by_entity, n_passages):
    """A context of passages about n_passages entities; one of them states `fact`."""
    others = [e for e in by_entity if e != fact.entity]
    entities = [fact.entity, *rng.sample(others, n_passages - 1)]
    rng.shuffle(entities)
    passages = []
    for ent in entities:
        ent_facts = by_entity[ent]
        passages.append(f"제목: {ent[0]}\n{_paragraph(rng, rng.sample(ent_facts, len(ent_facts)), 'ko')}")
    item = {"context": "\n\n".join(passages),
            "question": _say(rng.choice(ATTRS[fact.attr]["q_ko"]), fact),
            "answer": fact.value[0], "titles": [fact.entity[0]]}
    # Ko-LongRAG's rows carry their instruction with {context} and {question} placeholders: the
    # demo's is the built-in template, so evaluation fills it as it would the official one.
    item["prompt"] = prompts.TEMPLATES["longqa_ko"]
    return item


def make_longqa(rng, facts, sizes):
    by_entity = _by_entity(facts)
    test_facts = rng.sample(facts, sizes.longqa_test)
    test = [{"id": f"demo-longqa-{i:04d}", **_longqa(rng, f, by_entity, sizes.longqa_passages)}
            for i, f in enumerate(test_facts)]
    # Training chats in the same prompt format, on short contexts (they fit the demo's
    # training sequences) and without the test contexts.
    train = [_longqa(rng, rng.choice(facts), by_entity, rng.choice(sizes.longqa_train_passages))
             for _ in range(sizes.longqa_train)]
    return test, [_chat([prompts.longqa_prompt(item, "longqa_ko"), item["answer"]]) for item in train]


def make_mtbench(rng, facts):
    """Two-turn open questions standing in for KoMT-Bench; math/reasoning carry references."""
    by_attr = {}
    for f in facts:
        by_attr.setdefault(f.attr, []).append(f)
    items = []
    for _ in range(4):
        c = rng.choice(list(_by_entity([f for f in facts if f.attr.startswith("city.")])))
        items.append(("writing", [f"{_particles('e', c[0])['e_eul']} 소개하는 짧은 글을 써 주세요.",
                                  "방금 쓴 글을 한 문장으로 줄여 주세요."], None))
    for _ in range(4):
        a, b = rng.sample(by_attr["item.price"], 2)
        pa, pb = int(a.value[1]), int(b.value[1])
        items.append(("math", [f"{a.entity[0]}의 가격은 {pa}골드이고 {b.entity[0]}의 가격은 {pb}골드입니다. "
                               "둘을 함께 사면 모두 얼마인가요?", "두 물건의 가격 차이는 얼마인가요?"],
                      [f"{pa + pb}골드", f"{abs(pa - pb)}골드"]))
    for _ in range(4):
        a, b = rng.sample(by_attr["person.age"], 2)
        older = a if int(a.value[1]) > int(b.value[1]) else b
        items.append(("reasoning", [f"{_particles('e', a.entity[0])['e_eun']} {a.value[0]}이고 "
                                    f"{_particles('e', b.entity[0])['e_eun']} "
                                    f"{b.value[0]}입니다. 누가 더 나이가 많나요?",
                                    "두 사람의 나이를 더하면 몇 살인가요?"],
                      [older.entity[0], f"{int(a.value[1]) + int(b.value[1])}살"]))
    for _ in range(4):
        p = rng.choice(list(_by_entity(by_attr["person.job"])))
        name = p[0] + ("이라고" if _batchim(p[0]) else "라고")
        items.append(("roleplay", [f"당신이 {name} 생각하고 자기소개를 해 주세요.",
                                   "이번에는 영어로 자기소개를 해 주세요."], None))
    # KoMT-Bench's layout: [] when an item has no reference.
    return [{"question_id": i + 1, "category": cat, "turns": turns, "reference": ref or []}
            for i, (cat, turns, ref) in enumerate(items)]


# --- writing -----------------------------------------------------------------------------

def generate(out_dir, seed=SEED, sizes=Sizes()):
    """Write every demo file into out_dir; the same seed gives byte-identical files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    facts = build_world(rng, sizes)
    corpus = make_corpus(rng, facts, sizes.corpus_copies)
    mcqa_test, mcqa_train = make_mcqa(rng, facts, sizes.mcqa_train_per_fact)
    longqa_test, longqa_train = make_longqa(rng, facts, sizes)
    sft = make_qa_chats(rng, facts, sizes) + mcqa_train + longqa_train
    rng.shuffle(sft)
    sft = [{"id": f"demo-sft-{i:05d}", **row} for i, row in enumerate(sft)]

    with AtomicWriter(out) as writer:
        writer.text(FILES["corpus"], corpus)
        writer.jsonl(FILES["sft"], sft)
        writer.jsonl(FILES["mcqa"], mcqa_test)
        writer.jsonl(FILES["longqa"], longqa_test)
        writer.jsonl(FILES["mtbench"], make_mtbench(rng, facts))
    counts = {"facts": len(facts), "corpus": len(corpus), "sft": len(sft), "mcqa": len(mcqa_test),
              "longqa": len(longqa_test)}
    print(f"demo data in {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write the demo's invented data sets.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    generate(args.out, args.seed)
    return 0


if __name__ == "__main__":
    from workflow_scripts.common import run_cli

    run_cli(main)
