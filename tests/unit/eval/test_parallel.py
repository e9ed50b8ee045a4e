"""How many artifacts validate scores at once, and the order a worker runs an artifact's jobs in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulu_quant.config import ConfigError, ValidateConfig
from tulu_quant.eval.parallel import Artifact, choose, ready, run_order, worker_count
from tulu_quant.eval.suite import Job

GiB = 1 << 30
SMALL = [270 << 20, 113 << 20, 95 << 20, 101 << 20]  # the stand-in's fp16, GPTQ, ONNX and GGUF on disk


@pytest.mark.parametrize(
    ("setting", "sizes", "cores", "free", "device", "engine", "expected"),
    [
        ("auto", SMALL, 2, 20 * GiB, "cpu", "native", 2),  # one per core
        ("auto", SMALL, 16, 20 * GiB, "cpu", "native", 4),  # one per artifact
        ("auto", SMALL[:1], 2, 20 * GiB, "cpu", "native", 1),  # the reference alone
        ("auto", SMALL, 1, 20 * GiB, "cpu", "native", 1),
        ("auto", [26 * GiB, 7 * GiB], 2, 20 * GiB, "cpu", "native", 1),  # 13B does not fit twice (or once)
        ("auto", [6 * GiB, 2 * GiB], 8, 20 * GiB, "cpu", "native", 1),  # 2 x (2 x 6 + 1) GiB > 15 GiB
        ("auto", [6 * GiB, 2 * GiB], 8, 40 * GiB, "cpu", "native", 2),
        ("auto", SMALL, 2, 20 * GiB, "cuda", "native", 1),  # one device
        ("auto", SMALL, 2, 20 * GiB, "cpu", "vllm", 1),  # one server at a time
        (1, SMALL, 2, 20 * GiB, "cpu", "native", 1),
        (3, SMALL, 2, 20 * GiB, "cpu", "native", 2),  # capped at the cores
        (8, SMALL[:2], 16, 20 * GiB, "cpu", "native", 2),  # and at the artifacts
        (1, SMALL, 2, 20 * GiB, "cuda", "native", 1),
    ],
)
def test_worker_count(setting, sizes, cores, free, device, engine, expected):
    workers, why = worker_count(setting, sizes, cores, free, device, engine)
    assert workers == expected and why


@pytest.mark.parametrize(
    ("device", "engine", "named"), [("cuda", "native", "device cuda"), ("cpu", "vllm", "engine vllm")]
)
def test_an_explicit_worker_count_that_cannot_apply_is_an_error(device, engine, named):
    with pytest.raises(ConfigError, match=f"validate.workers 2 .*with {named} set it to 1 or auto"):
        worker_count(2, SMALL, 2, 20 * GiB, device, engine)


def test_workers_setting_is_checked():
    assert ValidateConfig(workers=3).workers == 3 and ValidateConfig().workers == "auto"
    with pytest.raises(ValueError, match="workers\n.*must be a positive integer or auto"):
        ValidateConfig(workers=0)


def job(key, **fields) -> Job:
    return Job(key, key, [(key, key, "points", True)], **fields)


def test_the_reference_runs_first_what_candidates_wait_for():
    ppl = job("ppl.wiki", settings={"kl_windows": 8})  # its pass compares the reference's saved KL windows
    plain = job("ppl.shakespeare", settings={"kl_windows": 0})
    kl, mmlu, alpaca = job("kl", uses_reference=True), job("mmlu"), job("alpaca", uses_reference=True)
    jobs = [ppl, plain, kl, mmlu, alpaca]
    assert [j.reads_reference for j in jobs] == [True, False, True, False, True]
    assert run_order(jobs, "candidate") == jobs  # what cannot start yet is passed over (ready)
    assert [j.key for j in run_order(jobs, "reference")] == ["ppl.wiki", "kl", "alpaca", "ppl.shakespeare", "mmlu"]


def artifacts_of(jobs: list[Job], roles=("reference", "candidate", "candidate")) -> list[Artifact]:
    reads = {j.key for j in jobs if j.reads_reference}
    return [Artifact(Path(f"a{i}"), role, f"a{i}", run_order(jobs, role), reads) for i, role in enumerate(roles)]


def test_jobs_that_read_the_reference_wait_for_it_and_for_each_other():
    jobs = [job("ppl.wiki", settings={"kl_windows": 2}), job("kl", uses_reference=True), job("gsm")]
    reference, candidate, _ = artifacts_of(jobs)
    assert ready(candidate, reference).key == "gsm"  # ppl.wiki and kl are passed over
    candidate.pending.remove(jobs[2])
    assert ready(candidate, reference) is None  # the reference has not scored ppl.wiki yet
    reference.done["ppl.wiki"] = object()
    assert ready(candidate, reference).key == "ppl.wiki"
    candidate.pending.remove(jobs[0])
    candidate.running.add("ppl.wiki")
    reference.done["kl"] = object()
    assert ready(candidate, reference) is None  # kl reads what the ppl.wiki pass writes: after it
    candidate.running.clear()
    assert ready(candidate, reference).key == "kl"
    reference.error = "broken"  # an over reference no longer holds anyone back (its missing results skip)
    assert ready(artifacts_of(jobs)[1], reference).key == "ppl.wiki"


def test_a_free_worker_keeps_its_artifact_then_takes_an_unheld_one_then_shares():
    jobs = [job("a"), job("b"), job("c")]
    state = artifacts_of(jobs)
    assert choose(state, None, set()) == (0, jobs[0])  # the reference first
    assert choose(state, None, {0}) == (1, jobs[0])  # another worker holds the reference
    state[1].pending.clear()
    assert choose(state, 1, {0}) == (2, jobs[0])  # its artifact is finished: the next unheld one
    assert choose(state, 2, {0, 1}) == (2, jobs[0])  # its own first
    state[2].pending.clear()
    assert choose(state, 2, {0}) == (0, jobs[0])  # nothing unheld is left: share the reference's jobs
    state[0].pending.clear()
    assert choose(state, 2, {0}) is None
