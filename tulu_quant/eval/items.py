"""Draw each benchmark's items from its data set: fixed by the suite seed, few-shot material never scored.

Shapes accepted from ``tulu_quant.data`` (plain lists and dicts):

- MMLU: records {question, choices[4], answer "A".."D", subject}. Each subject's first 5 questions are its few-shot
  pool and are excluded from scoring in both 0- and 5-shot (so the two settings score the same questions).
- GSM8K: a list of {question, answer} or {"test": [...], "train": [...], "exemplars": [...]}; exemplars are
  {question, cot_answer, short_answer}. Without exemplars they are made from train items (or, failing that, the first
  test items, then excluded from scoring): the solution without its <<calculator>> notes + " So the answer is N.".
- BBH: {task: {"examples": [{input, target}], "cot_prompt": str}} (optionally under a "tasks" key).
- TydiQA: a list of {lang, context, question, answers} or {"test": [...], "train": [...]}; answers may be strings or
  {"text": ...}. Shots per language come from train (or the first test item of the language, then not scored).
- HumanEval: records {task_id, prompt, canonical_solution, test, entry_point}.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from ..config import AlpacaSuite, BbhSuite, CodexSuite, GsmSuite, MmluSuite, TydiqaSuite
from ..errors import MissingPath
from .prompts import PASSAGE_TASKS

MMLU_SHOT_POOL = 5


def data_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def draw(items: list, n: int | None, rng: random.Random) -> list:
    """n items drawn without replacement, kept in their original order (all of them when n is None or larger)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


# ------------------------------------------------------------------------------------------------------ MMLU


def mmlu_items(records: list[dict], cfg: MmluSuite, seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    by_subject: dict[str, list[dict]] = {}
    for record in records:
        by_subject.setdefault(record["subject"], []).append(record)
    rng = random.Random(seed)
    subjects = draw(sorted(by_subject), cfg.subjects, rng)
    items, shots = [], {}
    for subject in subjects:
        shots[subject] = by_subject[subject][:MMLU_SHOT_POOL]
        items += draw(by_subject[subject][MMLU_SHOT_POOL:], cfg.per_subject, rng)
    return items, shots


# ------------------------------------------------------------------------------------------------------ GSM8K


def gsm_exemplar(item: dict) -> dict:
    body, _, final = item["answer"].rpartition("####")
    number = final.strip().replace(",", "")
    reasoning = " ".join(re.sub(r"<<.*?>>", "", body).split())
    return {
        "question": item["question"],
        "cot_answer": f"{reasoning} So the answer is {number}.",
        "short_answer": number,
    }


def gsm_items(task: Any, cfg: GsmSuite, seed: int) -> tuple[list[dict], list[dict]]:
    test = task["test"] if isinstance(task, dict) else list(task)
    pool_exemplars = task.get("exemplars") if isinstance(task, dict) else None
    train = task.get("train") if isinstance(task, dict) else None
    if pool_exemplars:
        exemplars = list(pool_exemplars)[: cfg.shots]
    elif train:
        exemplars = [gsm_exemplar(t) for t in train[: cfg.shots]]
    else:
        exemplars, test = [gsm_exemplar(t) for t in test[: cfg.shots]], test[cfg.shots :]
    return draw(test, cfg.examples, random.Random(seed)), exemplars


# ------------------------------------------------------------------------------------------------------ BBH


def bbh_items(task: Any, cfg: BbhSuite, seed: int) -> tuple[list[dict], dict[str, str]]:
    tasks = task["tasks"] if "tasks" in task else task
    rng = random.Random(seed)
    names = draw(sorted(tasks), cfg.tasks, rng)
    items, prompts = [], {}
    for name in names:
        prompts[name] = tasks[name]["cot_prompt"]
        items += [
            {"task": name, "input": e["input"], "target": e["target"]}
            for e in draw(tasks[name]["examples"], cfg.per_task, rng)
        ]
    return items, prompts


# ------------------------------------------------------------------------------------------------------ TydiQA


def _qa(record: dict) -> dict:
    answers = [a["text"] if isinstance(a, dict) else a for a in record["answers"]]
    return {"lang": record["lang"], "context": record["context"], "question": record["question"], "answers": answers}


def tydiqa_items(task: Any, cfg: TydiqaSuite, seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    test = [_qa(r) for r in (task["test"] if isinstance(task, dict) else task)]
    train = [_qa(r) for r in task.get("train", [])] if isinstance(task, dict) else []
    rng = random.Random(seed)
    items, shots = [], {}
    for lang in sorted({r["lang"] for r in test}):
        pool = [r for r in test if r["lang"] == lang]
        candidates = [r for r in train if r["lang"] == lang]
        if candidates:
            shots[lang] = draw(candidates, cfg.shots, rng)[: cfg.shots]
        else:
            shots[lang], pool = pool[: cfg.shots], pool[cfg.shots :]
        items += draw(pool, cfg.per_language, rng)
    return items, shots


# ------------------------------------------------------------------------------------------------------ HumanEval


def codex_items(problems: list[dict], cfg: CodexSuite, seed: int) -> tuple[list[dict], list[dict]]:
    """(problems for greedy pass@1, problems for sampled pass@k: a subset of the first)."""
    rng = random.Random(seed)
    greedy = draw(problems, cfg.problems, rng)
    return greedy, draw(greedy, cfg.sampled_problems, rng)


# ------------------------------------------------------------------------------------------------------ AlpacaFarm


def passages(documents: list[str], low: int = 400, high: int = 1200) -> list[str]:
    """Paragraphs of a readable length from evaluation documents."""
    found = []
    for document in documents:
        for paragraph in document.split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if low <= len(paragraph) <= high:
                found.append(paragraph)
    return found


def alpaca_instructions(cfg: AlpacaSuite, documents: list[str], seed: int) -> list[str]:
    """The suite's held-out instructions: from cfg.instructions_file when given, else tasks over evaluation passages."""
    rng = random.Random(seed)
    if cfg.instructions_file is not None:
        path = cfg.instructions_file.expanduser()
        if not path.is_file():
            raise MissingPath(
                f"alpaca.instructions_file {path} does not exist; point it at a JSONL file with "
                "an 'instruction' field per line, or remove the key."
            )
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return draw([line["instruction"] for line in lines], cfg.instructions, rng)
    chosen = draw(passages(documents), cfg.instructions, rng)
    return [PASSAGE_TASKS[i % len(PASSAGE_TASKS)].format(passage=p) for i, p in enumerate(chosen)]
