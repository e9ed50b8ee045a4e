"""Item draws: each is checked against Python's own `random` used the way open-instruct's scripts use it (seed the
generator once with 42, then sample in the script's order)."""

import random

from tulu_quant.config import AlpacaSuite, BbhSuite, CodexSuite, GsmSuite, MmluSuite, TydiqaSuite
from tulu_quant.eval import items


def mmlu_records(split):
    return [
        {"question": f"{split}-{s}-{i}", "choices": ["a", "b", "c", "d"], "answer": "A", "subject": s}
        for s in ("alpha", "beta", "gamma")
        for i in range(12 if split == "test" else 6)
    ]


def test_mmlu_shots_come_from_dev_and_test_is_whole():
    dev = {}
    for record in mmlu_records("dev"):
        dev.setdefault(record["subject"], []).append(record)
    scored, shots = items.mmlu_items(mmlu_records("test"), dev, MmluSuite(), seed=0)
    assert scored == mmlu_records("test")  # all questions, subjects in sorted order
    assert {s: [r["question"] for r in rows] for s, rows in shots.items()} == {
        s: [f"dev-{s}-{i}" for i in range(5)] for s in ("alpha", "beta", "gamma")
    }
    subset, _ = items.mmlu_items(mmlu_records("test"), dev, MmluSuite(subjects=2, per_subject=4), seed=3)
    again, _ = items.mmlu_items(mmlu_records("test"), dev, MmluSuite(subjects=2, per_subject=4), seed=3)
    other, _ = items.mmlu_items(mmlu_records("test"), dev, MmluSuite(subjects=2, per_subject=4), seed=4)
    assert subset == again != other and len(subset) == 8
    assert items.mmlu_items(mmlu_records("test"), None, MmluSuite(), seed=0)[1] == {
        "alpha": [],
        "beta": [],
        "gamma": [],
    }


def test_gsm_sample_is_random_sample_after_seed_42():
    test = [{"question": f"q{i}", "answer": "#### 1"} for i in range(50)]
    exemplars = [{"question": f"e{i}", "cot_answer": "c", "short_answer": "1"} for i in range(8)]
    drawn, shown = items.gsm_items({"test": test, "exemplars": exemplars}, GsmSuite(examples=20), 42)
    random.seed(42)
    assert drawn == random.sample(test, 20)
    assert shown == exemplars  # all eight, in the paper's order
    drawn, shown = items.gsm_items({"test": test, "exemplars": exemplars}, GsmSuite(examples=20, shots=3), 42)
    random.seed(42)
    assert drawn == random.sample(test, 20) and shown == random.sample(exemplars, 3)
    every, _ = items.gsm_items({"test": test, "exemplars": exemplars}, GsmSuite(examples=None), 42)
    assert every == test


def test_bbh_samples_each_task_in_turn_from_one_generator():
    tasks = {
        name: {"examples": [{"input": f"{name}{i}", "target": "x"} for i in range(60)], "cot_prompt": f"P {name}"}
        for name in ("web_of_lies", "navigate", "snarks")
    }
    drawn, task_prompts = items.bbh_items(tasks, BbhSuite(), seed=0, sample_seed=42)
    random.seed(42)
    expected = []
    for name in sorted(tasks):
        expected += [{"task": name, **e} for e in random.sample(tasks[name]["examples"], 40)]
    assert drawn == expected and task_prompts == {name: f"P {name}" for name in tasks}
    two, _ = items.bbh_items(tasks, BbhSuite(tasks=2, per_task=5), seed=1, sample_seed=42)
    assert len(two) == 10 and len({item["task"] for item in two}) == 2


def test_tydiqa_languages_in_file_order_then_train_shots():
    def rows(split, n):
        return [
            {"lang": lang, "context": "c", "question": f"{split}-{lang}{i}", "answers": ["x"]}
            for lang in ("swahili", "english")
            for i in range(n)
        ]

    task = {"test": rows("test", 30), "train": rows("train", 10)}
    drawn, shots = items.tydiqa_items(task, TydiqaSuite(per_language=5), 42)
    random.seed(42)
    expected = random.sample(task["test"][:30], 5) + random.sample(task["test"][30:], 5)
    expected_shots = {"swahili": random.sample(task["train"][:10], 1), "english": random.sample(task["train"][10:], 1)}
    assert drawn == expected and shots == expected_shots
    assert list(shots) == ["swahili", "english"]


def test_codex_and_alpaca_subsets_keep_their_order():
    problems = [{"task_id": str(i)} for i in range(10)]
    subset = items.codex_items(problems, CodexSuite(problems=6), seed=0)
    assert len(subset) == 6 and subset == sorted(subset, key=lambda p: int(p["task_id"]))
    assert items.codex_items(problems, CodexSuite(), seed=0) == problems
    rows = [{"instruction": f"i{n}", "output": "o"} for n in range(805)]
    assert items.alpaca_items(rows, AlpacaSuite(), seed=0) == rows
    assert len(items.alpaca_items(rows, AlpacaSuite(instructions=50), seed=0)) == 50
