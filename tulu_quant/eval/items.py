"""Draw each benchmark's items from its data set as the protocol does (docs/protocol.md).

open-instruct's own draws use Python's ``random`` seeded with ``protocol.sample_seed`` (42): GSM's 200 test questions
(``random.sample``), BBH's 40 examples per task (one generator, the tasks in turn) and TydiQA's 100 questions per
language, then one demonstration per language from train. A quick suite's smaller subsets (MMLU subjects and
questions, BBH tasks, HumanEval problems, AlpacaEval instructions) are drawn by the suite's own seed. Few-shot
material is never scored: MMLU's shots come from its dev split, GSM's are Wei et al.'s exemplars, TydiQA's from train.

Shapes read (tulu_quant.data.tasks): MMLU test records {question, choices[4], answer "A".."D", subject} and dev
{subject: [records]}; GSM8K {test: [{question, answer}], exemplars: [{question, cot_answer, short_answer}]}; BBH
{task: {examples: [{input, target}], cot_prompt}}; TydiQA {test, train: [{lang, context, question, answers}]};
HumanEval records {task_id, prompt, canonical_solution, test, entry_point}; AlpacaEval [{instruction, output}].
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from ..config import AlpacaSuite, BbhSuite, CodexSuite, GsmSuite, MmluSuite, TydiqaSuite

MMLU_SHOTS = 5


def data_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def draw(items: list, n: int | None, rng: random.Random) -> list:
    """n items drawn without replacement, kept in their original order (all of them when n is None or larger)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


def sample(items: list, n: int | None, rng: random.Random) -> list:
    """open-instruct's ``random.sample(items, n)``: the same items in the same (drawn) order; all when n is larger."""
    return list(items) if n is None or n >= len(items) else rng.sample(items, n)


# ------------------------------------------------------------------------------------------------------ MMLU


def mmlu_items(
    test: list[dict], dev: dict[str, list[dict]] | None, cfg: MmluSuite, seed: int
) -> tuple[list[dict], dict[str, list[dict]]]:
    """(the scored test questions, the dev-split shots of each of their subjects)."""
    by_subject: dict[str, list[dict]] = {}
    for record in test:
        by_subject.setdefault(record["subject"], []).append(record)
    rng = random.Random(seed)
    subjects = draw(sorted(by_subject), cfg.subjects, rng)
    scored = [item for subject in subjects for item in draw(by_subject[subject], cfg.per_subject, rng)]
    shots = {subject: (dev or {}).get(subject, [])[:MMLU_SHOTS] for subject in subjects}
    return scored, shots


# ------------------------------------------------------------------------------------------------------ GSM8K


def gsm_items(task: dict, cfg: GsmSuite, sample_seed: int) -> tuple[list[dict], list[dict]]:
    """(random.seed(42); random.sample(test, 200), then the exemplars: all 8 in order, or `shots` of them drawn by the
    same generator, as open-instruct draws fewer)."""
    rng = random.Random(sample_seed)
    return sample(task["test"], cfg.examples, rng), sample(task["exemplars"], cfg.shots, rng)


# ------------------------------------------------------------------------------------------------------ BBH


def bbh_items(tasks: dict, cfg: BbhSuite, seed: int, sample_seed: int) -> tuple[list[dict], dict[str, str]]:
    """Each task's examples drawn in turn from one generator seeded with sample_seed (tasks in sorted order)."""
    names = draw(sorted(tasks), cfg.tasks, random.Random(seed))
    rng = random.Random(sample_seed)
    items, task_prompts = [], {}
    for name in names:
        task_prompts[name] = tasks[name]["cot_prompt"]
        items += [{"task": name, **e} for e in sample(tasks[name]["examples"], cfg.per_task, rng)]
    return items, task_prompts


# ------------------------------------------------------------------------------------------------------ TydiQA


def tydiqa_items(task: dict, cfg: TydiqaSuite, sample_seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """Per language, in the order the dev file first names them (as open-instruct's dict of languages): its test
    questions drawn from one generator, then, after all of them, its demonstrations drawn from train (open-instruct
    walks a set of languages there, an order that changes with PYTHONHASHSEED; we keep the dev file's)."""
    rng = random.Random(sample_seed)
    languages = list(dict.fromkeys(r["lang"] for r in task["test"]))
    items = []
    for lang in languages:
        items += sample([r for r in task["test"] if r["lang"] == lang], cfg.per_language, rng)
    shots = {lang: sample([r for r in task["train"] if r["lang"] == lang], cfg.shots, rng) for lang in languages}
    return items, {lang: s[: cfg.shots] for lang, s in shots.items()}


# ------------------------------------------------------------------------------------------------------ HumanEval


def codex_items(problems: list[dict], cfg: CodexSuite, seed: int) -> list[dict]:
    return draw(problems, cfg.problems, random.Random(seed))


# ------------------------------------------------------------------------------------------------------ AlpacaFarm


def alpaca_items(rows: list[dict], cfg: AlpacaSuite, seed: int) -> list[dict]:
    """AlpacaEval's instructions with text-davinci-003's outputs (all 805, or a subset drawn by the seed)."""
    return draw(rows, cfg.instructions, random.Random(seed))
