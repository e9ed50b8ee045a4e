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
    result = benchmarks.mmlu(backend, items, {"logic": [mmlu_item("C", "shot")] * 5}, 5, "tulu", 2048, NOOP)
    assert result.scores == [1.0, 0.0, 1.0, 0.0] and result.outputs == ["B"] * 4
    assert result.details["prompts_with_fewer_shots"] == 0
    short = benchmarks.mmlu(backend, items[:1], {"logic": [mmlu_item("C", "shot " * 20)] * 5}, 5, "tulu", 120, NOOP)
    assert short.details["prompts_with_fewer_shots"] == 1 and short.scores == [1.0]


def test_gsm_bbh_tydiqa_score_generated_answers(tokenizer):
    backend = FakeBackend(
        tokenizer,
        answers={
            "apples": "3 and 4 make 7. So the answer is 7.",
            "pears": "I think 8.",
            "Is it": "Hmm. So the answer is (B). Done.",
            "Where": "In France\nmore",
        },
    )
    exemplars = [{"question": "q", "cot_answer": "c", "short_answer": "1"}]
    gsm = benchmarks.gsm(
        backend,
        [{"question": "How many apples?", "answer": "x #### 7"}, {"question": "How many pears?", "answer": "#### 9"}],
        exemplars,
        True,
        "tulu",
        64,
        NOOP,
    )
    assert gsm.scores == [1.0, 0.0]
    bbh = benchmarks.bbh(
        backend,
        [{"task": "t1", "input": "Is it?", "target": "(B)"}, {"task": "t2", "input": "Is it?", "target": "(A)"}],
        {"t1": "P", "t2": "P"},
        True,
        "tulu",
        64,
        NOOP,
    )
    assert bbh.scores == [1.0, 0.0] and bbh.groups == ["t1", "t2"]
    qa = {"lang": "english", "context": "Paris is in France.", "question": "Where is Paris?", "answers": ["France"]}
    tydi = benchmarks.tydiqa(backend, [qa], {"english": [qa]}, True, "tulu", 512, 50, NOOP)
    # the reply "In France\nmore" -> tokens [in, france, more] vs [france]: P = 1/3, R = 1
    assert tydi.scores == [pytest.approx(0.5)]


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
    greedy = benchmarks.codex(
        backend, [add, sub], "tulu", GenerationSettings(max_new_tokens=64), 1, [1], Limits(5), 2, NOOP
    )
    assert greedy.scores == [1.0, 0.0]
    assert "extra" not in greedy.outputs[0]["first_completion"]  # cut at the Codex stop sequence "\ndef"
    sampled = benchmarks.codex(
        backend,
        [add],
        "tulu",
        GenerationSettings(max_new_tokens=64, temperature=0.8, top_p=0.95, repetition_penalty=1.0, seed=0),
        3,
        [1, 2],
        Limits(5),
        2,
        NOOP,
    )
    assert sampled.outputs[0]["correct"] == 3 and sampled.outputs[0]["pass_at"] == {"1": 1.0, "2": 1.0}
    assert backend.calls["generate"] == 2 + 3


def test_alpaca_agreement(tokenizer):
    reference = FakeBackend(tokenizer, answers={"first": "The cat sat.", "second": "Yes"})
    candidate = FakeBackend(tokenizer, answers={"first": "The cat sat.", "second": "No way"})
    instructions = ["the first task", "the second task"]
    ref = benchmarks.generate_answers(reference, instructions, "tulu", 32, NOOP)
    cand = benchmarks.generate_answers(candidate, instructions, "tulu", 32, NOOP)
    exact, rouge = benchmarks.agreement(cand, ref)
    assert exact == [1.0, 0.0] and rouge == [1.0, 0.0]
