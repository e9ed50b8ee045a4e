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

    def load(path):
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
