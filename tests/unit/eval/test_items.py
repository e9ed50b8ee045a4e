from tulu_quant.config import CodexSuite, GsmSuite, MmluSuite, TydiqaSuite
from tulu_quant.eval import items


def records():
    return [
        {"question": f"{s}-{i}", "choices": ["a", "b", "c", "d"], "answer": "A", "subject": s}
        for s in ("alpha", "beta", "gamma")
        for i in range(12)
    ]


def test_mmlu_shots_are_never_scored_and_draws_are_fixed_by_the_seed():
    scored, shots = items.mmlu_items(records(), MmluSuite(subjects=2, per_subject=4), seed=3)
    again, _ = items.mmlu_items(records(), MmluSuite(subjects=2, per_subject=4), seed=3)
    other, _ = items.mmlu_items(records(), MmluSuite(subjects=2, per_subject=4), seed=4)
    assert scored == again and scored != other and len(scored) == 8 and len(shots) == 2
    for subject, pool in shots.items():
        assert [p["question"] for p in pool] == [f"{subject}-{i}" for i in range(5)]
    assert not {s["question"] for s in scored} & {p["question"] for pool in shots.values() for p in pool}
    every, _ = items.mmlu_items(records(), MmluSuite(), seed=0)
    assert len(every) == 3 * 7


def test_gsm_exemplars_from_train_solutions():
    train = [{"question": "Tom has 2+3?", "answer": "He has 2+3 = <<2+3=5>>5 apples.\n#### 5"}]
    test = [{"question": f"q{i}", "answer": "#### 1"} for i in range(10)]
    drawn, exemplars = items.gsm_items({"test": test, "train": train}, GsmSuite(examples=4, shots=1), seed=0)
    assert exemplars == [
        {"question": "Tom has 2+3?", "cot_answer": "He has 2+3 = 5 apples. So the answer is 5.", "short_answer": "5"}
    ]
    assert len(drawn) == 4
    drawn, exemplars = items.gsm_items(test, GsmSuite(examples=None, shots=2), seed=0)
    assert [e["question"] for e in exemplars] == ["q0", "q1"] and len(drawn) == 8  # test items used as shots


def test_tydiqa_shots_per_language_and_codex_subsets():
    test = [
        {"lang": lang, "context": "c", "question": f"{lang}{i}", "answers": [{"text": "x"}]}
        for lang in ("english", "finnish")
        for i in range(5)
    ]
    drawn, shots = items.tydiqa_items(test, TydiqaSuite(per_language=2), seed=0)
    assert len(drawn) == 4 and {k: [s["question"] for s in v] for k, v in shots.items()} == {
        "english": ["english0"],
        "finnish": ["finnish0"],
    }
    assert drawn[0]["answers"] == ["x"]
    problems = [{"task_id": str(i)} for i in range(10)]
    greedy, sampled = items.codex_items(problems, CodexSuite(problems=6, sampled_problems=2), seed=0)
    assert len(greedy) == 6 and len(sampled) == 2 and all(p in greedy for p in sampled)
