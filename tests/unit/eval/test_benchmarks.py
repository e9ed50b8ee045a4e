import numpy as np
import pytest
from unit.eval.eval_fakes import FakeBackend

from tulu_quant.config import GenerationSettings
from tulu_quant.eval import benchmarks
from tulu_quant.eval.decode import letter_ids
from tulu_quant.eval.sandbox import Limits

NOOP = lambda n=1, **_: None  # noqa: E731


def mmlu_item(answer, q="Pick one."):
    return {"question": q, "choices": ["w", "x", "y", "z"], "answer": answer, "subject": "logic"}


def test_mmlu_reads_the_answer_letter_from_next_token_logits(tokenizer):
    b_id = letter_ids(tokenizer, ("B",))[0]

    def prefers_b(prefix):
        logits = np.zeros(len(tokenizer), dtype=np.float32)
        logits[b_id] = 5.0
        return logits

    backend = FakeBackend(tokenizer, prefers_b)
    items = [mmlu_item("B"), mmlu_item("A"), mmlu_item("B"), mmlu_item("D")]
    result = benchmarks.mmlu(backend, items, {"logic": [mmlu_item("C", "shot")] * 5}, 5, "tulu", 2048, False, NOOP)
    assert result.scores == [1.0, 0.0, 1.0, 0.0] and result.outputs == ["B"] * 4
    assert result.details["prompts_with_fewer_shots"] == 0
    shots = {"logic": [mmlu_item("C", "shot " * 20)] * 5}
    short = benchmarks.mmlu(backend, items[:1], shots, 5, "tulu", 120, False, NOOP)
    assert short.details["prompts_with_fewer_shots"] == 1 and short.scores == [1.0]


def test_prompts_carry_bos_only_when_asked(tokenizer):
    seen = []

    def record(prefix):
        seen.append(list(prefix))
        return np.zeros(len(tokenizer), dtype=np.float32)

    backend = FakeBackend(tokenizer, record)
    for bos in (False, True):
        seen.clear()
        benchmarks.mmlu(backend, [mmlu_item("A")], {}, 0, "tulu", 2048, bos, NOOP)
        assert (seen[0][0] == tokenizer.bos_token_id) is bos


def test_gsm_bbh_tydiqa_score_generated_answers(tokenizer):
    backend = FakeBackend(
        tokenizer,
        answers={
            "apples": "3 and 4 make 7. So the answer is 7.\nQuestion: and 9?",
            "pears": "I think 8.",
            "Is it": "Hmm. So the answer is (B). Done.\n\nQ: next. So the answer is (A).",
            "Or is it": "Let me see.\n\nSo the answer is (A).",
            "Where": "In France\nmore",
            "Who": "the France",
        },
    )
    exemplars = [{"question": "q", "cot_answer": "c", "short_answer": "1"}]
    gsm_items = [
        {"question": "How many apples?", "answer": "x #### 7"},
        {"question": "How many pears?", "answer": "#### 9"},
    ]
    gsm = benchmarks.gsm(backend, gsm_items, exemplars, True, "tulu", 64, False, NOOP)
    assert gsm.scores == [1.0, 0.0]  # the 9 after the first newline is cut off: the last number is 7
    assert gsm.outputs[0] == "3 and 4 make 7. So the answer is 7."
    bbh_items = [
        {"task": "t1", "input": "Is it?", "target": "(B)"},
        {"task": "t2", "input": "Is it?", "target": "(A)"},
        {"task": "t2", "input": "Or is it?", "target": "(A)"},
    ]
    bbh = benchmarks.bbh(backend, bbh_items, {"t1": "P", "t2": "P"}, True, "tulu", 64, False, NOOP)
    assert bbh.scores == [1.0, 0.0, 0.0] and bbh.groups == ["t1", "t2", "t2"]
    assert "(A)" not in bbh.outputs[0]  # generation ended with the first paragraph
    qa = {"lang": "english", "context": "Paris is in France.", "question": "Where is Paris?", "answers": ["France"]}
    who, shot = {**qa, "question": "Who is it?"}, {**qa, "question": "Name the country."}
    tydi = benchmarks.tydiqa(backend, [qa, who], {"english": [shot]}, True, "tulu", 512, 50, False, NOOP)
    # "In France\nmore" -> "In France": tokens [in, france] vs [france]: P = 1/2, R = 1; "the France" is exact
    assert tydi.scores == [pytest.approx(2 / 3), 1.0] and tydi.more == {"em": [0.0, 1.0]}


def test_tydiqa_passage_cut_counts_tokens_with_specials(tokenizer):
    passage = "the quick brown fox jumps over the lazy dog " * 8
    ids = tokenizer(passage).input_ids  # BOS first, as open-instruct's tokenizer(...) call counts it
    cut = benchmarks.tydiqa_passage(tokenizer, passage, 10)
    assert cut == tokenizer.decode(ids[:10]) and len(cut) < len(passage)
    assert benchmarks.tydiqa_passage(tokenizer, "short", 10) == "short"


def test_codex_executes_completions(tokenizer):
    add = {
        "task_id": "t/0",
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "test": "def check(f):\n    assert f(2, 3) == 5\n",
    }
    sub = {
        "task_id": "t/1",
        "prompt": "def sub(a, b):\n",
        "entry_point": "sub",
        "test": "def check(f):\n    assert f(2, 3) == -1\n",
    }
    backend = FakeBackend(
        tokenizer, answers={"def add": "    return a + b\n\ndef extra():\n    pass", "def sub": "    return a + b\n"}
    )
    settings = GenerationSettings(max_new_tokens=64)
    greedy = benchmarks.codex(backend, [add, sub], "tulu", False, settings, 1, [1], Limits(5), 2, False, NOOP)
    assert greedy.scores == [1.0, 0.0]
    assert "extra" not in greedy.outputs[0]["first_completion"]  # cut at the Codex stop sequence "\ndef"
    sampled = benchmarks.codex(
        backend,
        [add],
        "tulu",
        False,
        GenerationSettings(max_new_tokens=64, temperature=0.8, top_p=0.95, repetition_penalty=1.0, seed=0),
        3,
        [1, 2],
        Limits(5),
        2,
        False,
        NOOP,
    )
    assert sampled.outputs[0]["correct"] == 3 and sampled.outputs[0]["pass_at"] == {"1": 1.0, "2": 1.0}
    assert backend.calls["generate"] == 2 + 3
    assert tokenizer.decode(backend.prompts[0]) == add["prompt"]  # no chat format, no BOS


def test_completion_keeps_the_leading_space_of_the_answer(tokenizer):
    from tulu_quant.eval.decode import completion_text

    prompt = tokenizer.encode("def f():\n", add_special_tokens=False)
    new = tokenizer.encode("    return 1", add_special_tokens=False)
    assert completion_text(tokenizer, prompt, new) == "    return 1"


def test_alpaca_agreement(tokenizer):
    reference = FakeBackend(tokenizer, answers={"first": "The cat sat.", "second": "Yes"})
    candidate = FakeBackend(tokenizer, answers={"first": "The cat sat.", "second": "No way"})
    instructions = ["the first task", "the second task"]
    ref = benchmarks.generate_answers(reference, instructions, "tulu", 32, NOOP)
    cand = benchmarks.generate_answers(candidate, instructions, "tulu", 32, NOOP)
    exact, rouge = benchmarks.agreement(cand, ref)
    assert exact == [1.0, 0.0] and rouge == [1.0, 0.0]
