from tulu_quant.eval.results import JobResult, Metric
from tulu_quant.eval.runner import evaluate_artifact
from tulu_quant.eval.suite import Job


def make_job(counter, settings):
    def compute(backend, role, reference, folder, advance):
        counter.append(role)
        return JobResult("acc", [Metric("acc", "accuracy", "points", True, 50.0 if reference is None else 40.0)])

    return Job("acc", "accuracy", [("acc", "accuracy", "points", True)], settings, compute, 1, uses_reference=True)


def test_finished_jobs_are_reused_and_changes_recompute(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    loads, counter = [], []

    def load(path, engine):
        loads.append(path)
        return object()

    work = tmp_path / "work"
    skipped = Job("gone", "gone", [("gone", "gone", "points", True)], skipped="data not reachable")
    first = evaluate_artifact(model, "reference", [make_job(counter, {"n": 1}), skipped], work, load)
    assert first["acc"].metrics[0].value == 50.0 and first["gone"].metrics[0].skipped == "data not reachable"
    again = evaluate_artifact(model, "reference", [make_job(counter, {"n": 1})], work, load)
    assert again["acc"].cached and counter == ["reference"] and len(loads) == 1  # no model load when all is cached
    evaluate_artifact(model, "reference", [make_job(counter, {"n": 2})], work, load)
    assert counter == ["reference", "reference"]

    def as_candidate(reference_print):
        jobs = [make_job(counter, {"n": 2})]
        return evaluate_artifact(
            model,
            "candidate",
            jobs,
            work,
            load,
            reference_results={"acc": first["acc"]},
            reference_print=reference_print,
        )

    assert as_candidate("r1")["acc"].metrics[0].value == 40.0
    as_candidate("r2")  # a new reference invalidates results that compared with the old one
    assert counter == ["reference", "reference", "candidate", "candidate"]
    none = evaluate_artifact(model, "candidate", [make_job(counter, {"n": 2})], work, load, reference_results={})
    assert none["acc"].metrics[0].skipped and len(counter) == 4


def test_jobs_run_on_their_engine_and_a_started_server_is_closed(tmp_path):
    """engine_of routes each job; each engine's backend loads once and is closed at the end; an engine other than
    native is part of the cache key, so switching engines recomputes and switching back reuses."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    loaded, closed, ran = [], [], []

    class Fake:
        def __init__(self, engine):
            self.engine = engine

        def close(self):
            closed.append(self.engine)

    def load(path, engine):
        loaded.append(engine)
        return Fake(engine)

    def job(key, needs_logits):
        def compute(backend, role, reference, folder, advance):
            ran.append((key, backend.engine))
            return JobResult(key, [Metric(key, key, "points", True, 1.0)])

        return Job(key, key, [(key, key, "points", True)], {}, compute, 1, needs_logits=needs_logits)

    jobs = [job("kl", True), job("gsm", False), job("ppl", False)]
    server = lambda j: "native" if j.needs_logits else "vllm"  # noqa: E731
    results = evaluate_artifact(model, "reference", jobs, tmp_path / "w", load, engine_of=server)
    assert ran == [("kl", "native"), ("gsm", "vllm"), ("ppl", "vllm")]
    assert loaded == ["native", "vllm"] and sorted(closed) == ["native", "vllm"]
    assert [results[k].engine for k in ("kl", "gsm")] == ["native", "vllm"]
    ran.clear()
    evaluate_artifact(model, "reference", jobs, tmp_path / "w", load)  # all native now: gsm and ppl recompute
    assert ran == [("gsm", "native"), ("ppl", "native")]
    ran.clear()
    evaluate_artifact(model, "reference", jobs, tmp_path / "w", load, engine_of=server)
    assert ran == [("gsm", "vllm"), ("ppl", "vllm")]  # the vllm results were overwritten by the native ones


def test_backends_the_caller_keeps_load_once_across_calls_and_stay_open(tmp_path):
    """A worker scores one job per call: the backend it passes in is loaded once and not closed by the runner."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    loads, closed, counter = [], [], []

    class Backend:
        def close(self):
            closed.append(True)

    def load(path, engine):
        loads.append(path)
        return Backend()

    kept = {}
    for n in (1, 2):
        job = make_job(counter, {"n": n})
        result = evaluate_artifact(
            model, "reference", [job], tmp_path / "work", load, backends=kept, numbers={"acc": 3}
        )
        assert result["acc"].metrics[0].value == 50.0
    assert len(loads) == 1 and not closed and set(kept) == {"native"} and counter == ["reference"] * 2
    evaluate_artifact(model, "reference", [make_job(counter, {"n": 3})], tmp_path / "work", load)
    assert len(loads) == 2 and closed == [True]  # loaded here, closed here
