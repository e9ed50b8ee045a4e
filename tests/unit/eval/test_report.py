import math

import pytest

from tulu_quant.config import Gate
from tulu_quant.eval.report import check_gate, check_gates, markdown, unmatched_gates
from tulu_quant.eval.results import compare, perplexity_metric, score_metric, skipped


def acc(scores, key="mmlu_0shot"):
    return score_metric(key, "MMLU", scores, samples=300)


def test_accuracy_metric_has_a_wilson_interval():
    metric = acc([1] * 8 + [0] * 2)
    assert metric.value == pytest.approx(80.0) and metric.ci == pytest.approx([49.02, 94.33], abs=0.01)


def test_drop_within_noise_passes_and_a_clear_drop_fails():
    ref = acc([1, 0] * 50)
    noisy = acc([0, 0, 1, 1] * 25)  # same accuracy, different items: paired interval contains 0
    delta = compare(ref, noisy, 300)
    assert delta.delta == pytest.approx(0.0) and delta.within_noise
    small_drop = acc([1, 0] * 48 + [0, 0] * 2)  # 2 points lower, only 2 discordant items
    d = compare(ref, small_drop, 300)
    assert check_gate(Gate(metric="mmlu_0shot", max_drop=1.0), small_drop, d).status == "pass"
    assert check_gate(Gate(metric="mmlu_0shot", max_drop=1.0, outside_noise_only=False), small_drop, d).status == "fail"
    big_drop = acc([0, 0] * 50)
    d = compare(ref, big_drop, 300)
    outcome = check_gate(Gate(metric="mmlu_0shot", max_drop=1.0), big_drop, d)
    assert outcome.status == "fail" and "drop 50" in outcome.detail and not d.within_noise and d.p_value < 1e-10


def test_perplexity_gates():
    ref = perplexity_metric("ppl.wiki", "ppl", [3.0, 3.1, 2.9, 3.0], 100, samples=200)
    cand = perplexity_metric("ppl.wiki", "ppl", [3.05, 3.15, 2.95, 3.05], 100, samples=200)
    delta = compare(ref, cand, 200)
    assert delta.delta_pct == pytest.approx(100 * math.expm1(0.05), rel=1e-6)  # every window's NLL rose by 0.05
    assert delta.ci == pytest.approx([100 * math.expm1(0.05)] * 2, rel=1e-6)
    assert (
        check_gate(Gate(metric="ppl.*", max_increase_pct=3.0, outside_noise_only=False), cand, delta).status == "fail"
    )
    assert check_gate(Gate(metric="ppl.*", max_increase_pct=6.0), cand, delta).status == "pass"
    assert check_gate(Gate(metric="ppl.*", max_value=10.0), cand, delta).status == "fail"  # e^3.05 = 21.1
    metrics = {"ppl.wiki": cand, "ppl.x": skipped("ppl.x", "p", "ppl", False, "no data")}
    outcomes = check_gates([Gate(metric="ppl.*", max_value=100.0)], metrics, {"ppl.wiki": delta})
    assert [o.status for o in outcomes] == ["pass", "skipped"]


def test_unknown_gate_metric_is_reported():
    assert unmatched_gates(
        [Gate(metric="ppl.*", max_value=1), Gate(metric="mmlu_0shto", max_drop=1)], ["ppl.wiki", "mmlu_0shot"]
    ) == ["mmlu_0shto"]
    with pytest.raises(ValueError):
        Gate(metric="kl_mean")  # no rule at all


def test_markdown_table_per_candidate():
    ref = {
        "name": "ref",
        "path": "/r",
        "info": {"kind": "torch", "size_bytes": 2**20},
        "metrics": {"mmlu_0shot": acc([1, 0] * 10)},
        "timings": {"mmlu_0shot": {"seconds": 1.0, "cached": False}},
    }
    cand_metric = acc([0, 0] * 10)
    delta = compare(ref["metrics"]["mmlu_0shot"], cand_metric, 200)
    gates = check_gates([Gate(metric="mmlu_0shot", max_drop=1.0)], {"mmlu_0shot": cand_metric}, {"mmlu_0shot": delta})
    cand = {
        "name": "q4",
        "path": "/c",
        "info": {"kind": "gptq", "size_bytes": 2**19},
        "metrics": {"mmlu_0shot": cand_metric},
        "deltas": {"mmlu_0shot": delta},
        "gates": gates,
        "timings": {"mmlu_0shot": {"seconds": 2.0, "cached": True}},
    }
    protocol = {"suite_name": "quick", "chat_format": "tulu", "context_length": 512, "jobs": ["mmlu_0shot"]}
    text = markdown(ref, [cand], protocol)
    assert "## q4 (gptq, 0.5 MiB): gates FAILED" in text
    row = [line for line in text.splitlines() if line.startswith("| MMLU")][-1]  # the candidate's table
    assert "| 50.00 [" in row and "| 0.00 [" in row and "-50.00" in row and "fail: drop 50" in row
    assert "| q4 | 2.0 (cached) |" in text
    assert "## ref (reference, torch, 1.0 MiB)" in text and "| MMLU (`mmlu_0shot`) | 50.00 [" in text
