#!/usr/bin/env python3
"""Generates the small bundled datasets under examples/data.

The data is synthetic: sentences come from the small lexicons and templates in this file,
not from the real STS-B, RTE or CommonsenseQA. Only the file formats are the originals':

  stsb/{train,dev}.tsv   GLUE STS-B TSV (index genre filename year old_index source1 source2
                         sentence1 sentence2 score), score 0..5 with 3 decimals
  rte/{train,dev}.tsv    GLUE RTE TSV (index sentence1 sentence2 label), label
                         entailment / not_entailment
  csqa/{train,dev}.jsonl official CommonsenseQA JSON lines (answerKey, id, question with
                         question_concept, five choices A-E, stem)

Each task is learnable from its inputs alone:
  stsb  a template sentence and a variant with some of its five meaning slots (who, what kind,
        doing what, where, when) replaced; the score is 5 minus the weight of the replaced
        slots, plus a little noise. Unchanged slots may be reworded with a synonym.
  rte   a premise stating a few facts; the hypothesis restates one of them (entailment) or
        restates it with one thing wrong (not_entailment): most often an entity, place or day
        that the premise does not mention, else a negation, else a swapped role or place.
  csqa  everyday-knowledge questions (where an animal lives, what tool does a job, what sound an
        animal makes, ...); the four distractors are answers to other questions of the same
        kind, never one that would also be right.

Deterministic: the same --seed gives the same bytes (python3 examples/generate_data.py
--out examples/data). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random

# --------------------------------------------------------------------------------------------
# STS-B
# --------------------------------------------------------------------------------------------

# Slot lexicons: (canonical phrase, [paraphrases with the same meaning]).
STS_ADJ = [
    ("happy", ["cheerful", "smiling"]),
    ("tall", []),
    ("old", ["elderly"]),
    ("young", []),
    ("tired", ["sleepy"]),
    ("busy", []),
    ("quiet", ["calm"]),
    ("small", ["little"]),
    ("friendly", ["kind"]),
    ("angry", ["upset"]),
    ("strong", []),
    ("hungry", []),
]
STS_SUBJ = [
    ("man", ["guy"]),
    ("woman", ["lady"]),
    ("boy", []),
    ("girl", []),
    ("child", ["kid"]),
    ("teacher", []),
    ("student", ["pupil"]),
    ("chef", ["cook"]),
    ("doctor", []),
    ("farmer", []),
    ("police officer", ["policeman"]),
    ("musician", []),
    ("nurse", []),
    ("soldier", []),
]
STS_ACTION = [
    ("is playing a guitar", ["is strumming a guitar"]),
    ("is riding a bike", ["is riding a bicycle"]),
    ("is eating an apple", ["is biting into an apple"]),
    ("is reading a book", ["is reading a novel"]),
    ("is cutting an onion", ["is slicing an onion", "is chopping an onion"]),
    ("is running", ["is jogging"]),
    ("is singing a song", ["is singing"]),
    ("is swimming", []),
    ("is cooking dinner", ["is making dinner", "is preparing dinner"]),
    ("is painting a picture", ["is painting"]),
    ("is talking on the phone", ["is speaking on the phone"]),
    ("is washing a car", ["is cleaning a car"]),
    ("is playing the piano", ["is playing piano"]),
    ("is drinking coffee", ["is having coffee"]),
    ("is writing a letter", ["is writing a note"]),
    ("is dancing", []),
    ("is sleeping", ["is taking a nap"]),
    ("is walking a dog", ["is taking a dog for a walk"]),
    ("is throwing a ball", ["is tossing a ball"]),
    ("is climbing a tree", []),
    ("is feeding a cat", []),
    ("is carrying a box", []),
]
STS_PLACE = [
    ("in the park", ["at the park"]),
    ("on the beach", ["at the beach"]),
    ("in the kitchen", []),
    ("on the street", ["on the road"]),
    ("in the garden", ["in the yard"]),
    ("at home", ["in the house"]),
    ("in a classroom", []),
    ("in the city", ["downtown"]),
    ("by the river", ["near the river"]),
    ("in the forest", ["in the woods"]),
    ("on a boat", []),
    ("in the office", []),
    ("on a farm", []),
    ("at the station", []),
]
STS_TIME = [
    ("in the morning", ["early in the day"]),
    ("at night", ["late at night"]),
    ("in the evening", []),
    ("on a sunny day", []),
    ("in the rain", ["while it is raining"]),
    ("after lunch", []),
    ("on the weekend", []),
    ("in the winter", []),
]
# Slot order, lexicon and weight: the weights add up to 5, the top of the scale.
STS_SLOTS = [
    ("adj", STS_ADJ, 0.5),
    ("subj", STS_SUBJ, 1.5),
    ("action", STS_ACTION, 1.5),
    ("place", STS_PLACE, 1.0),
    ("time", STS_TIME, 0.5),
]
STS_GENRES = ["main-captions", "main-forums", "main-news"]
STS_FILES = ["synthetic-captions", "synthetic-forums", "synthetic-news"]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sts_render(words: dict[str, str], time_first: bool) -> str:
    parts = []
    if words.get("adj"):
        noun = f"{words['adj']} {words['subj']}"
    else:
        noun = words["subj"]
    core = f"{article(noun)} {noun} {words['action']} {words['place']}"
    if words.get("time"):
        s = f"{words['time']}, {core}" if time_first else f"{core} {words['time']}"
    else:
        s = core
    return s[0].upper() + s[1:] + "."


def sts_surface(rng: random.Random, entry: tuple[str, list[str]], reword: float) -> str:
    canon, alts = entry
    if alts and rng.random() < reword:
        return rng.choice(alts)
    return canon


def sts_pair(rng: random.Random) -> tuple[str, str, float]:
    picks = {name: rng.randrange(len(lex)) for name, lex, _ in STS_SLOTS}
    # How many slots change: uniform over 0..5 so scores cover the whole scale.
    k = rng.randrange(len(STS_SLOTS) + 1)
    changed = set(rng.sample([name for name, _, _ in STS_SLOTS], k))
    w1: dict[str, str] = {}
    w2: dict[str, str] = {}
    loss = 0.0
    for name, lex, weight in STS_SLOTS:
        i = picks[name]
        w1[name] = sts_surface(rng, lex[i], 0.25)
        if name in changed:
            j = rng.randrange(len(lex) - 1)
            j = j + 1 if j >= i else j
            w2[name] = sts_surface(rng, lex[j], 0.25)
            loss += weight
        elif name in ("adj", "time") and rng.random() < 0.12:
            w2[name] = ""  # left out: half the meaning of the slot is lost
            loss += weight / 2
        else:
            w2[name] = sts_surface(rng, lex[i], 0.5)
    s1 = sts_render(w1, rng.random() < 0.2)
    s2 = sts_render(w2, rng.random() < 0.2)
    score = min(5.0, max(0.0, 5.0 - loss + rng.gauss(0.0, 0.2)))
    if rng.random() < 0.5:
        s1, s2 = s2, s1
    return s1, s2, score


def gen_stsb(seed: int, n_train: int, n_dev: int) -> tuple[str, str]:
    rng = random.Random(f"{seed}/stsb")
    seen_pairs: set[tuple[str, str]] = set()
    train_sentences: set[str] = set()

    def make(n: int, is_dev: bool) -> list[tuple[str, str, float]]:
        out = []
        while len(out) < n:
            s1, s2, score = sts_pair(rng)
            if s1 == s2 and score < 4.5:
                continue
            key = (s1, s2) if s1 <= s2 else (s2, s1)
            if key in seen_pairs:
                continue
            if is_dev and (s1 in train_sentences or s2 in train_sentences):
                continue
            seen_pairs.add(key)
            if not is_dev:
                train_sentences.update((s1, s2))
            out.append((s1, s2, score))
        return out

    def tsv(rows: list[tuple[str, str, float]], year: str) -> str:
        lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i, (s1, s2, score) in enumerate(rows):
            g = i % len(STS_GENRES)
            lines.append(
                f"{i}\t{STS_GENRES[g]}\t{STS_FILES[g]}\t{year}\t{i:04d}\tnone\tnone\t{s1}\t{s2}\t{score:.3f}"
            )
        return "\n".join(lines) + "\n"

    train = make(n_train, False)
    dev = make(n_dev, True)
    return tsv(train, "2024train"), tsv(dev, "2024dev")


# --------------------------------------------------------------------------------------------
# RTE
# --------------------------------------------------------------------------------------------

NAMES = [
    "John", "Mary", "David", "Sarah", "Peter", "Anna", "James", "Linda", "Paul", "Susan",
    "Mark", "Laura", "Tom", "Emma", "Frank", "Helen", "George", "Alice", "Henry", "Grace",
    "Jack", "Lucy", "Sam", "Kate", "Ben", "Nora", "Robert", "Julia", "Michael", "Rose",
]
CITIES = [
    "London", "Paris", "Berlin", "Madrid", "Rome", "Tokyo", "Chicago", "Boston", "Sydney",
    "Toronto", "Dublin", "Vienna", "Cairo", "Moscow", "Denver", "Seattle", "Lisbon", "Athens",
]
PROFS = [
    "doctor", "teacher", "lawyer", "pilot", "nurse", "farmer", "writer", "painter", "engineer",
    "baker", "banker", "singer", "chef", "dentist", "journalist", "scientist",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
THINGS = ["car", "house", "painting", "boat", "horse", "bicycle", "piano", "camera", "farm", "shop", "guitar", "watch"]
# (past, base, passive participle)
ACT_VERBS = [
    ("bought", "buy", "bought"),
    ("sold", "sell", "sold"),
    ("found", "find", "found"),
    ("lost", "lose", "lost"),
    ("repaired", "repair", "repaired"),
    ("rented", "rent", "rented"),
    ("painted", "paint", "painted"),
]
# (giver verb, giver base, receiver verb): "A sold x to B" == "B bought x from A".
TRANSFERS = [("sold", "sell", "bought"), ("gave", "give", "received"), ("lent", "lend", "borrowed")]
EVENTS = ["conference", "concert", "wedding", "meeting", "festival", "football match", "party", "exhibition"]
COMPARATIVES = [("older", "younger"), ("taller", "shorter"), ("richer", "poorer"), ("stronger", "weaker"), ("heavier", "lighter")]


# How a not_entailment hypothesis goes wrong: it names something the premise does not mention
# (OUT), negates or contradicts it (NEG), or swaps two things the premise does mention (SWAP:
# roles, places, comparisons; the hardest to learn, so the rarest).
OUT, NEG, SWAP = "out", "neg", "swap"
CORRUPTION_WEIGHTS = {OUT: 0.7, NEG: 0.2, SWAP: 0.1}


# Weight of a hypothesis that paraphrases or infers (rather than restates) a fact of the premise.
PARAPHRASE = 0.35


def corrupt(rng: random.Random, bad: list[tuple[str, str]]) -> str:
    kinds = [k for k in CORRUPTION_WEIGHTS if any(kind == k for kind, _ in bad)]
    kind = rng.choices(kinds, weights=[CORRUPTION_WEIGHTS[k] for k in kinds])[0]
    return rng.choice([h for k, h in bad if k == kind])


def other(rng: random.Random, pool: list[str], *avoid: str) -> str:
    choices = [x for x in pool if x not in avoid]
    return rng.choice(choices)


def rte_bio(rng: random.Random) -> tuple[str, list]:
    """A, a prof from city1, verbed a thing in city2 on day."""
    a = rng.choice(NAMES)
    prof = rng.choice(PROFS)
    c1 = rng.choice(CITIES)
    c2 = other(rng, CITIES, c1)
    day = rng.choice(DAYS)
    thing = rng.choice(THINGS)
    past, base, part = rng.choice(ACT_VERBS)
    premise = rng.choice([
        f"{a}, {article(prof)} {prof} from {c1}, {past} a {thing} in {c2} on {day}.",
        f"On {day}, {a}, {article(prof)} {prof} from {c1}, {past} a {thing} in {c2}.",
    ])
    b = other(rng, NAMES, a)
    p2 = other(rng, PROFS, prof)
    c3 = other(rng, CITIES, c1, c2)
    t2 = other(rng, THINGS, thing)
    d2 = other(rng, DAYS, day)
    # (faithful hypothesis, [corrupted hypotheses])
    hyps = [
        (f"{a} is {article(prof)} {prof}.", [
            (OUT, f"{a} is {article(p2)} {p2}."),
            (NEG, f"{a} is not {article(prof)} {prof}."),
            (OUT, f"{b} is {article(prof)} {prof}."),
        ]),
        (f"{a} is from {c1}.", [
            (SWAP, f"{a} is from {c2}."),
            (OUT, f"{a} is from {c3}."),
            (NEG, f"{a} is not from {c1}."),
        ]),
        (f"{a} {past} a {thing}.", [
            (OUT, f"{a} {past} a {t2}."),
            (NEG, f"{a} did not {base} a {thing}."),
            (OUT, f"{b} {past} a {thing}."),
        ]),
        (f"{a} was in {c2} on {day}.", [
            (SWAP, f"{a} was in {c1} on {day}."),
            (OUT, f"{a} was in {c2} on {d2}."),
            (NEG, f"{a} was not in {c2} on {day}."),
        ]),
        (f"{a} was not in {c1} on {day}.", [
            (SWAP, f"{a} was not in {c2} on {day}."),
            (SWAP, f"{a} was in {c1} on {day}."),
            (OUT, f"{b} was not in {c1} on {day}."),
        ], PARAPHRASE),
        (f"A {prof} from {c1} {past} a {thing}.", [
            (SWAP, f"A {prof} from {c2} {past} a {thing}."),
            (OUT, f"A {p2} from {c1} {past} a {thing}."),
            (NEG, f"A {prof} from {c1} did not {base} a {thing}."),
        ]),
        (f"A {thing} was {part} in {c2}.", [
            (SWAP, f"A {thing} was {part} in {c1}."),
            (OUT, f"A {t2} was {part} in {c2}."),
            (NEG, f"A {thing} was not {part} in {c2}."),
        ], PARAPHRASE),
    ]
    return premise, hyps


def rte_transfer(rng: random.Random) -> tuple[str, list]:
    """On day, A sold a thing to B in city."""
    a = rng.choice(NAMES)
    b = other(rng, NAMES, a)
    c = other(rng, NAMES, a, b)
    city = rng.choice(CITIES)
    c2 = other(rng, CITIES, city)
    day = rng.choice(DAYS)
    thing = rng.choice(THINGS)
    t2 = other(rng, THINGS, thing)
    give, give_base, get = rng.choice(TRANSFERS)
    premise = rng.choice([
        f"On {day}, {a} {give} a {thing} to {b} in {city}.",
        f"{a} {give} a {thing} to {b} in {city} last {day}.",
    ])
    hyps = [
        (f"{a} {give} a {thing} to {b}.", [
            (SWAP, f"{b} {give} a {thing} to {a}."),
            (NEG, f"{a} did not {give_base} a {thing} to {b}."),
            (OUT, f"{a} {give} a {t2} to {b}."),
        ]),
        (f"{b} {get} a {thing} from {a}.", [
            (SWAP, f"{a} {get} a {thing} from {b}."),
            (OUT, f"{b} {get} a {thing} from {c}."),
            (OUT, f"{b} {get} a {t2} from {a}."),
        ], PARAPHRASE),
        (f"{a} and {b} were in {city} on {day}.", [
            (OUT, f"{a} and {b} were in {c2} on {day}."),
            (OUT, f"{a} and {c} were in {city} on {day}."),
            (NEG, f"{a} and {b} were not in {city} on {day}."),
        ]),
        (f"{b} got a {thing}.", [
            (SWAP, f"{a} got a {thing} from {b}."),
            (OUT, f"{b} got a {t2}."),
            (NEG, f"{b} did not get a {thing}."),
        ], PARAPHRASE),
    ]
    return premise, hyps


def rte_missed(rng: random.Random) -> tuple[str, list]:
    """A lives in city1 but did not go to the event in city2 on day."""
    a = rng.choice(NAMES)
    b = other(rng, NAMES, a)
    c1 = rng.choice(CITIES)
    c2 = other(rng, CITIES, c1)
    c3 = other(rng, CITIES, c1, c2)
    day = rng.choice(DAYS)
    event = rng.choice(EVENTS)
    e2 = other(rng, EVENTS, event)
    premise = rng.choice([
        f"{a} lives in {c1} but did not go to the {event} in {c2} on {day}.",
        f"Although {a} lives in {c1}, {a} did not go to the {event} in {c2} on {day}.",
    ])
    hyps = [
        (f"{a} lives in {c1}.", [
            (SWAP, f"{a} lives in {c2}."),
            (OUT, f"{a} lives in {c3}."),
            (NEG, f"{a} does not live in {c1}."),
        ]),
        (f"{a} did not go to the {event}.", [
            (NEG, f"{a} went to the {event}."),
            (OUT, f"{a} did not go to the {e2}."),
            (OUT, f"{b} did not go to the {event}."),
        ]),
        (f"{a} did not attend the {event}.", [
            (NEG, f"{a} attended the {event}."),
            (OUT, f"{b} did not attend the {event}."),
            (OUT, f"{a} did not attend the {e2}."),
        ], PARAPHRASE),
        (f"{a} missed the {event}.", [
            (NEG, f"{a} attended the {event}."),
            (OUT, f"{a} missed the {e2}."),
            (OUT, f"{b} missed the {event}."),
        ], PARAPHRASE),
        (f"The {event} was held in {c2}.", [
            (SWAP, f"The {event} was held in {c1}."),
            (OUT, f"The {event} was held in {c3}."),
            (NEG, f"The {event} was not held in {c2}."),
        ]),
    ]
    return premise, hyps


def rte_compare(rng: random.Random) -> tuple[str, list]:
    """A is older than B, and both work as profs in city."""
    a = rng.choice(NAMES)
    b = other(rng, NAMES, a)
    c = other(rng, NAMES, a, b)
    more, less = rng.choice(COMPARATIVES)
    prof = rng.choice(PROFS)
    p2 = other(rng, PROFS, prof)
    city = rng.choice(CITIES)
    c2 = other(rng, CITIES, city)
    premise = rng.choice([
        f"{a} is {more} than {b}, and both of them work as {prof}s in {city}.",
        f"{a} and {b} work as {prof}s in {city}, and {a} is {more} than {b}.",
    ])
    hyps = [
        (f"{b} is {less} than {a}.", [
            (SWAP, f"{a} is {less} than {b}."),
            (SWAP, f"{b} is {more} than {a}."),
            (OUT, f"{c} is {less} than {a}."),
        ], PARAPHRASE),
        (f"{a} is {more} than {b}.", [
            (SWAP, f"{b} is {more} than {a}."),
            (SWAP, f"{a} is {less} than {b}."),
            (NEG, f"{a} is not {more} than {b}."),
        ]),
        (f"{b} is not {more} than {a}.", [
            (SWAP, f"{a} is not {more} than {b}."),
            (NEG, f"{b} is {more} than {a}."),
            (OUT, f"{c} is not {more} than {a}."),
        ], PARAPHRASE),
        (f"{b} is {article(prof)} {prof}.", [
            (OUT, f"{b} is {article(p2)} {p2}."),
            (NEG, f"{b} is not {article(prof)} {prof}."),
            (OUT, f"{c} is {article(prof)} {prof}."),
        ]),
        (f"{a} works in {city}.", [
            (OUT, f"{a} works in {c2}."),
            (NEG, f"{a} does not work in {city}."),
            (OUT, f"{c} works in {city}."),
        ]),
    ]
    return premise, hyps


RTE_TEMPLATES = [rte_bio, rte_bio, rte_transfer, rte_missed, rte_compare]


def gen_rte(seed: int, n_train: int, n_dev: int) -> tuple[str, str]:
    rng = random.Random(f"{seed}/rte")
    seen: set[tuple[str, str]] = set()
    train_premises: set[str] = set()

    def make(n: int, is_dev: bool) -> list[tuple[str, str, str]]:
        labels = ["entailment"] * (n // 2) + ["not_entailment"] * (n - n // 2)
        rng.shuffle(labels)
        out = []
        for label in labels:
            while True:
                premise, hyps = rng.choice(RTE_TEMPLATES)(rng)
                if is_dev and premise in train_premises:
                    continue
                weights = [h[2] if len(h) > 2 else 1.0 for h in hyps]
                good, bad = rng.choices(hyps, weights=weights)[0][:2]
                hyp = good if label == "entailment" else corrupt(rng, bad)
                if (premise, hyp) in seen:
                    continue
                break
            seen.add((premise, hyp))
            if not is_dev:
                train_premises.add(premise)
            out.append((premise, hyp, label))
        return out

    def tsv(rows: list[tuple[str, str, str]]) -> str:
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [f"{i}\t{p}\t{h}\t{label}" for i, (p, h, label) in enumerate(rows)]
        return "\n".join(lines) + "\n"

    train = make(n_train, False)
    dev = make(n_dev, True)
    return tsv(train), tsv(dev)


# --------------------------------------------------------------------------------------------
# CommonsenseQA
# --------------------------------------------------------------------------------------------

# Each question type: stem templates ({x}: the item's phrase, {name}: a person, {poss}: "your"
# in questions to "you", "their" about a person) and items (phrase, concept, answer, [answers
# that would also be right, never used as distractors]). Distractors are other items' answers.
CSQA_TYPES = {
    "animal_home": {
        "stems": [
            "Where does a {x} usually live?",
            "Where would you most likely find a {x}?",
            "What place is home to a {x}?",
            "{name} wants to see a {x} where it lives. Where should {name} go?",
        ],
        "items": [
            ("whale", "whale", "ocean", ["sea", "arctic", "antarctica"]),
            ("shark", "shark", "ocean", ["sea", "arctic", "river"]),
            ("camel", "camel", "desert", []),
            ("polar bear", "polar bear", "arctic", []),
            ("monkey", "monkey", "jungle", ["forest", "zoo", "tree"]),
            ("cow", "cow", "farm", ["field", "barn"]),
            ("pig", "pig", "farm", ["barn"]),
            ("bee", "bee", "hive", ["garden"]),
            ("frog", "frog", "pond", ["lake", "river", "swamp", "jungle", "forest"]),
            ("bat", "bat", "cave", ["barn", "forest", "jungle"]),
            ("bird", "bird", "nest", ["tree", "forest", "sky"]),
            ("deer", "deer", "forest", ["woods", "field"]),
            ("crocodile", "crocodile", "river", ["swamp", "lake"]),
            ("horse", "horse", "stable", ["farm", "barn", "field"]),
            ("penguin", "penguin", "antarctica", ["ice", "ocean", "zoo"]),
            ("rabbit", "rabbit", "burrow", ["field", "garden", "hole", "farm", "forest"]),
            ("spider", "spider", "web", ["cave", "forest", "jungle", "burrow", "nest"]),
        ],
    },
    "object_place": {
        "stems": [
            "Where would you most likely find {x}?",
            "Where are you most likely to see {x}?",
            "{name} saw {x}. Where was {name} most likely?",
        ],
        "items": [
            ("a stove", "stove", "kitchen", []),
            ("a refrigerator", "refrigerator", "kitchen", []),
            ("a bed", "bed", "bedroom", ["hospital"]),
            ("a pillow", "pillow", "bedroom", []),
            ("a toothbrush", "toothbrush", "bathroom", []),
            ("a shower", "shower", "bathroom", ["gym"]),
            ("a car", "car", "garage", []),
            ("shelves full of books", "book", "library", ["classroom", "office", "bedroom", "store"]),
            ("a famous painting", "painting", "museum", []),
            ("a plane", "plane", "airport", []),
            ("a train", "train", "station", []),
            ("a blackboard", "blackboard", "classroom", []),
            ("an altar", "altar", "church", []),
            ("a cash register", "cash register", "store", ["restaurant", "bank"]),
            ("a safe full of money", "money", "bank", []),
            ("a sick patient", "patient", "hospital", []),
            ("a waiter", "waiter", "restaurant", []),
            ("sand and seashells", "seashell", "beach", []),
            ("a stapler", "stapler", "office", ["classroom", "library"]),
            ("a treadmill", "treadmill", "gym", []),
            ("a stage with actors", "actor", "theater", []),
        ],
    },
    "tool": {
        "stems": [
            "What do you use to {x}?",
            "What would you need to {x}?",
            "{name} wanted to {x}. What did {name} need?",
        ],
        "items": [
            ("cut paper", "paper", "scissors", []),
            ("write a letter", "letter", "pen", ["pencil"]),
            ("dig a hole", "hole", "shovel", []),
            ("sweep the floor", "floor", "broom", []),
            ("unlock a door", "door", "key", []),
            ("tell the time", "time", "clock", ["watch", "phone"]),
            ("take a photo", "photo", "camera", ["phone"]),
            ("eat soup", "soup", "spoon", []),
            ("stay dry in the rain", "rain", "umbrella", []),
            ("brush {poss} teeth", "teeth", "toothbrush", []),
            ("sew a button", "button", "needle", []),
            ("cut down a tree", "tree", "axe", ["saw"]),
            ("drive a nail", "nail", "hammer", []),
            ("measure a straight line", "line", "ruler", []),
            ("see in the dark", "dark", "flashlight", ["candle", "lamp"]),
            ("boil water", "water", "kettle", ["pot", "stove"]),
            ("dry off after a shower", "shower", "towel", []),
            ("climb onto a roof", "roof", "ladder", []),
            ("call a friend", "call", "phone", []),
            ("erase a pencil mark", "mark", "eraser", []),
            ("look at the stars", "star", "telescope", []),
        ],
    },
    "sound": {
        "stems": [
            "What sound does a {x} make?",
            "What noise would you hear from a {x}?",
            "{name} heard a {x} nearby. What sound did it make?",
        ],
        "items": [
            ("dog", "dog", "bark", ["growl", "howl"]),
            ("cat", "cat", "meow", ["purr", "hiss"]),
            ("cow", "cow", "moo", []),
            ("duck", "duck", "quack", []),
            ("lion", "lion", "roar", ["growl"]),
            ("snake", "snake", "hiss", []),
            ("owl", "owl", "hoot", []),
            ("horse", "horse", "neigh", []),
            ("pig", "pig", "oink", []),
            ("bee", "bee", "buzz", []),
            ("sheep", "sheep", "baa", []),
            ("frog", "frog", "croak", []),
            ("wolf", "wolf", "howl", ["growl"]),
            ("small bird", "bird", "chirp", []),
            ("mouse", "mouse", "squeak", []),
        ],
    },
    "color": {
        "stems": [
            "What color is {x}?",
            "Most of the time, what color is {x}?",
            "{name} drew a picture of {x}. Which color did {name} use?",
        ],
        "items": [
            ("a ripe banana", "banana", "yellow", []),
            ("fresh grass", "grass", "green", []),
            ("a clear sky", "sky", "blue", []),
            ("fresh snow", "snow", "white", []),
            ("coal", "coal", "black", []),
            ("blood", "blood", "red", []),
            ("chocolate", "chocolate", "brown", ["white"]),
            ("a lemon", "lemon", "yellow", []),
            ("milk", "milk", "white", []),
            ("a pumpkin", "pumpkin", "orange", []),
            ("a fire truck", "fire truck", "red", []),
            ("a crow", "crow", "black", []),
            ("a ripe tomato", "tomato", "red", []),
            ("an eggplant", "eggplant", "purple", []),
            ("a frog", "frog", "green", ["brown"]),
            ("a carrot", "carrot", "orange", []),
            ("an elephant", "elephant", "gray", []),
            ("a flamingo", "flamingo", "pink", []),
            ("a polar bear", "polar bear", "white", []),
            ("a lime", "lime", "green", []),
            ("the ocean", "ocean", "blue", ["green"]),
            ("tree bark", "bark", "brown", ["gray"]),
        ],
    },
    "feeling": {
        "stems": [
            "How would you feel if you {x}?",
            "If you {x}, how would you probably feel?",
            "{name} {x}. How did {name} most likely feel?",
        ],
        "items": [
            ("won a prize", "prize", "happy", ["excited", "proud", "surprised"]),
            ("lost {poss} dog", "losing", "sad", ["upset", "worried"]),
            ("heard a strange noise at night", "noise", "scared", ["nervous", "worried"]),
            ("waited in line for hours", "waiting", "bored", ["tired", "angry", "upset", "hungry"]),
            ("ran a long race", "race", "tired", ["thirsty", "hot", "proud", "hungry"]),
            ("had {poss} new bike stolen", "stealing", "angry", ["sad", "upset"]),
            ("ate a huge meal", "meal", "full", ["tired"]),
            ("skipped breakfast and lunch", "skipping", "hungry", ["tired"]),
            ("had nothing to drink all day", "drink", "thirsty", ["tired"]),
            ("stood in the snow without a coat", "snow", "cold", []),
            ("sat in the hot sun all afternoon", "sun", "hot", ["thirsty", "tired"]),
            ("got a gift {poss} friends kept secret", "gift", "surprised", ["happy", "excited"]),
            ("had to speak in front of a big crowd", "crowd", "nervous", ["scared"]),
        ],
    },
    "job": {
        "stems": [
            "Who {x}?",
            "What do you call a person who {x}?",
            "{name} is the one who {x}. What is the job of {name}?",
        ],
        "items": [
            ("puts out fires", "fire", "firefighter", []),
            ("flies a plane", "plane", "pilot", []),
            ("treats sick people", "sickness", "doctor", ["nurse"]),
            ("teaches children at school", "school", "teacher", []),
            ("fixes teeth", "teeth", "dentist", []),
            ("cooks food in a restaurant", "restaurant", "chef", ["waiter"]),
            ("delivers letters", "letter", "mailman", []),
            ("catches criminals", "criminal", "police officer", []),
            ("grows crops", "crop", "farmer", []),
            ("cuts hair", "hair", "barber", []),
            ("fixes broken cars", "car", "mechanic", []),
            ("builds wooden furniture", "furniture", "carpenter", []),
            ("cares for sick animals", "animal", "vet", ["farmer"]),
            ("writes books", "book", "author", []),
            ("bakes bread", "bread", "baker", ["chef"]),
            ("repairs leaking pipes", "pipe", "plumber", []),
            ("serves food at the table", "food", "waiter", []),
        ],
    },
    "body": {
        "stems": [
            "What part of the body do you use to {x}?",
            "Which body part helps you {x}?",
            "{name} needs to {x}. Which body part will {name} use?",
        ],
        "items": [
            ("see", "seeing", "eyes", []),
            ("hear music", "hearing", "ears", []),
            ("smell flowers", "smell", "nose", []),
            ("taste food", "taste", "tongue", ["teeth", "nose"]),
            ("think", "thinking", "brain", ["head"]),
            ("breathe", "breathing", "lungs", ["nose"]),
            ("chew food", "chewing", "teeth", []),
            ("walk", "walking", "legs", ["foot"]),
            ("kick a ball", "kick", "foot", ["legs"]),
            ("hold a cup", "holding", "hand", []),
            ("pump blood", "blood", "heart", []),
            ("nod", "nodding", "head", []),
        ],
    },
    "made_from": {
        "stems": [
            "What do people make {x} from?",
            "What is used to make {x}?",
            "{name} wants to make {x}. What does {name} need?",
        ],
        "items": [
            ("bread", "bread", "flour", ["milk", "eggs"]),
            ("cheese", "cheese", "milk", []),
            ("wine", "wine", "grapes", []),
            ("french fries", "french fries", "potatoes", []),
            ("ketchup", "ketchup", "tomatoes", []),
            ("a warm sweater", "sweater", "wool", []),
            ("paper", "paper", "wood", []),
            ("glass", "glass", "sand", []),
            ("butter", "butter", "milk", []),
            ("orange juice", "juice", "oranges", []),
            ("an omelet", "omelet", "eggs", ["milk"]),
            ("a candle", "candle", "wax", []),
            ("a tire", "tire", "rubber", []),
            ("popcorn", "popcorn", "corn", []),
            ("hot chocolate", "hot chocolate", "cocoa", ["milk"]),
        ],
    },
    "wear": {
        "stems": [
            "What do you wear on your {x}?",
            "What do people usually wear on their {x}?",
            "What might {name} wear on their {x}?",
        ],
        "items": [
            ("feet", "foot", "shoes", []),
            ("head", "head", "hat", ["scarf"]),
            ("hands in winter", "hand", "gloves", ["ring"]),
            ("neck when it is cold", "neck", "scarf", []),
            ("wrist", "wrist", "watch", []),
            ("finger", "finger", "ring", []),
            ("waist", "waist", "belt", ["pants"]),
            ("eyes to see better", "eye", "glasses", []),
            ("legs", "leg", "pants", []),
        ],
    },
}
PEOPLE = ["Anna", "Ben", "Carl", "Dana", "Emma", "Fred", "Gina", "Hank", "Ivy", "Jake", "Kim",
          "Leo", "Mia", "Nick", "Olga", "Pete", "Rita", "Sam", "Tina", "Will"]
LABELS = ["A", "B", "C", "D", "E"]


def csqa_stem(template: str, phrase: str, name: str) -> str:
    poss = "their" if "{name}" in template else "your"
    x = phrase.replace("{poss}", poss)
    s = template.replace("{x}", x).replace("{name}", name)
    return s[0].upper() + s[1:]


def gen_csqa(seed: int, n_train: int, n_dev: int) -> tuple[str, str]:
    rng = random.Random(f"{seed}/csqa")
    # Every (type, item, stem template) combination belongs to train or to dev, so a dev stem
    # is never a train stem with only a name changed; the item itself is usually also seen in
    # train under another wording.
    combos = []
    for qtype, spec in CSQA_TYPES.items():
        for item_i in range(len(spec["items"])):
            for stem_i in range(len(spec["stems"])):
                combos.append((qtype, item_i, stem_i))
    rng.shuffle(combos)
    n_dev_combos = len(combos) // 5
    dev_combos, train_combos = combos[:n_dev_combos], combos[n_dev_combos:]

    seen_stems: set[str] = set()
    seen_questions: set[tuple[str, tuple[str, ...]]] = set()

    def make(n: int, pool: list[tuple[str, int, int]], unique_stems: bool) -> list[dict]:
        out = []
        while len(out) < n:
            qtype, item_i, stem_i = rng.choice(pool)
            spec = CSQA_TYPES[qtype]
            phrase, concept, answer, also = spec["items"][item_i]
            template = spec["stems"][stem_i]
            stem = csqa_stem(template, phrase, rng.choice(PEOPLE))
            if unique_stems and stem in seen_stems:
                continue
            answers = []
            for it in spec["items"]:
                if it[2] not in answers:
                    answers.append(it[2])
            candidates = [a for a in answers if a != answer and a not in also]
            choices = rng.sample(candidates, 4)
            pos = rng.randrange(5)
            choices.insert(pos, answer)
            key = (stem, tuple(choices))
            if key in seen_questions:
                continue
            seen_questions.add(key)
            seen_stems.add(stem)
            out.append({
                "answerKey": LABELS[pos],
                "id": f"{rng.getrandbits(128):032x}",
                "question": {
                    "question_concept": concept,
                    "choices": [{"label": l, "text": t} for l, t in zip(LABELS, choices)],
                    "stem": stem,
                },
            })
        return out

    # Dev first, so its stems are unique; train draws only from the train combinations.
    dev = make(n_dev, dev_combos, True)
    train = make(n_train, train_combos, False)

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows)

    return jsonl(train), jsonl(dev)


# --------------------------------------------------------------------------------------------

README = """\
# Bundled sample data

Synthetic, generated by `examples/generate_data.py` (seed {seed}) from its own small lexicons
and templates: not the real STS-B, RTE or CommonsenseQA, only their file formats.

| task | files | format | train / dev |
|------|-------|--------|-------------|
| stsb | stsb/train.tsv, stsb/dev.tsv | GLUE STS-B TSV, score 0..5 | {n_train} / {n_dev} |
| rte  | rte/train.tsv, rte/dev.tsv | GLUE RTE TSV, entailment / not_entailment | {n_train} / {n_dev} |
| csqa | csqa/train.jsonl, csqa/dev.jsonl | CommonsenseQA JSON lines, 5 choices | {n_train} / {n_dev} |

Regenerate (byte-for-byte identical): `python3 examples/generate_data.py --out examples/data`.
`examples/job-local.yaml` trains on these files.
"""


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--train", type=int, default=600, help="training examples per task")
    ap.add_argument("--dev", type=int, default=150, help="validation examples per task")
    args = ap.parse_args()

    stsb_train, stsb_dev = gen_stsb(args.seed, args.train, args.dev)
    rte_train, rte_dev = gen_rte(args.seed, args.train, args.dev)
    csqa_train, csqa_dev = gen_csqa(args.seed, args.train, args.dev)
    files = {
        "stsb/train.tsv": stsb_train,
        "stsb/dev.tsv": stsb_dev,
        "rte/train.tsv": rte_train,
        "rte/dev.tsv": rte_dev,
        "csqa/train.jsonl": csqa_train,
        "csqa/dev.jsonl": csqa_dev,
        "README.md": README.format(seed=args.seed, n_train=args.train, n_dev=args.dev),
    }
    for rel, text in files.items():
        write(os.path.join(args.out, rel), text)
        print(f"{os.path.join(args.out, rel)}: {text.count(chr(10))} lines")


if __name__ == "__main__":
    main()
