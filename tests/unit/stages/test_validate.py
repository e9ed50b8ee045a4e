"""The validate stage end to end on tiny random LLaMA models, with small in-test data sets."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from tiny import bpe_tokenizer, run_config, save_tiny_hf

from tulu_quant.config import ConfigError, Gate, SuiteConfig, ValidateConfig
from tulu_quant.stages import validate

WORDS = (
    "the river town north south water bridge market farmers bread children summer winter people street square "
    "stone mill hills snow spring city shops fruit cheese evening light road house field"
).split()


def build_tiny(root: Path, seed: int = 0, head_scale: float = 1.0) -> Path:
    """A random 2-layer LLaMA with a byte-level BPE tokenizer trained on the spot; head_scale sharpens its output."""
    return save_tiny_hf(
        root, bpe_tokenizer(" ".join(WORDS)), seed=seed, head_scale=head_scale, max_position_embeddings=256
    )


MMLU = [
    {
        "question": f"Question {s} {i}: which word?",
        "choices": ["river", "town", "bridge", "market"],
        "answer": "ABCD"[i % 4],
        "subject": s,
    }
    for s in ("geography", "world_history")
    for i in range(9)
]
HUMANEVAL = [
    {
        "task_id": "HumanEval/0",
        "prompt": 'def add(a, b):\n    """Add."""\n',
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "def check(f):\n    assert f(1, 2) == 3\n",
    },
    {
        "task_id": "HumanEval/1",
        "prompt": 'def neg(a):\n    """Negate."""\n',
        "entry_point": "neg",
        "canonical_solution": "    return -a\n",
        "test": "def check(f):\n    assert f(1) == -1\n",
    },
]


def write_data_folder(root: Path) -> Path:
    """A data folder laid out as tulu_quant.data.tasks reads it: MMLU dev, GSM8K and its exemplars, BBH, AlpacaEval
    (TydiQA left out: it is reported as not available)."""
    (root / "mmlu" / "dev").mkdir(parents=True)
    for subject in ("geography", "world_history"):
        rows = "".join(f"Dev {subject} {i}?,river,town,bridge,market,{'ABCD'[i % 4]}\n" for i in range(5))
        (root / "mmlu" / "dev" / f"{subject}_dev.csv").write_text(rows)
    gsm = [
        {"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(6)
    ]
    (root / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    (root / "gsm").mkdir()
    exemplars = [
        {
            "question": "There are 2 trees and 3 more. How many?",
            "cot_answer": "2 + 3 = 5. So the answer is 5.",
            "short_answer": "5",
        }
    ]
    (root / "gsm" / "cot_exemplars.json").write_text(json.dumps(exemplars))
    (root / "bbh" / "tasks").mkdir(parents=True)
    (root / "bbh" / "cot-prompts").mkdir()
    for task in ("boolean_expressions", "navigate"):
        examples = [{"input": f"{task} question {i}", "target": "True"} for i in range(3)]
        (root / "bbh" / "tasks" / f"{task}.json").write_text(json.dumps({"examples": examples}))
        prompt = "canary line\n-----\nEvaluate.\n\nQ: not False\nA: Let's think. It is True. So the answer is True."
        (root / "bbh" / "cot-prompts" / f"{task}.txt").write_text(prompt)
    (root / "alpaca_eval").mkdir()
    rows = [
        {
            "instruction": f"Describe the {w}.",
            "output": f"The {w} is old.",
            "generator": "text_davinci_003",
            "dataset": "test",
        }
        for w in ("river", "town", "bridge", "market")
    ]
    (root / "alpaca_eval" / "text_davinci_003_outputs.json").write_text(json.dumps(rows))
    return root


class FakeSource:
    """wiki and shakespeare as small deterministic paragraphs of WORDS."""

    def __init__(self, name):
        rng = random.Random(0 if name == "wiki" else 1)
        self.name, self.paragraphs = name, [" ".join(rng.choice(WORDS) for _ in range(90)) + "." for _ in range(12)]

    def documents(self, split, limit=None):
        half = len(self.paragraphs) // 2
        docs = self.paragraphs[:half] if split == "calibration" else self.paragraphs[half:]
        return ["\n\n".join(docs[i : i + 2]) for i in range(0, len(docs), 2)]

    def describe(self, splits):
        return {"name": self.name, "sizes": {s: {"documents": len(self.documents(s))} for s in splits}}


SUITE = {
    "seed": 0,
    "bootstrap_samples": 200,
    "perplexity": {
        "sources": ["wiki", "shakespeare"],
        "max_windows": 4,
        "source_windows": {"shakespeare": 2},
        "kl_windows": 2,
    },
    "mmlu": {"shots": [0, 5], "per_subject": 3},
    "gsm": {"examples": 4},
    "bbh": {"per_task": 2},
    "tydiqa": {"per_language": 2},
    "codex": {"problems": 2, "samples": 2, "temperatures": {1: 0.1, 2: 0.8}, "max_new_tokens": 12},
    "alpaca": {"instructions": 3, "max_new_tokens": 6},
}


@pytest.fixture
def fake_data(monkeypatch, tmp_path_factory) -> Path:
    """Small data sets: the text sources and the pinned MMLU test / HumanEval replaced, the rest in a data folder
    (the validate: data_dir of cfg(fake_data)); TydiQA unavailable (no file, no Hub)."""
    from tulu_quant import data
    from tulu_quant.data import hub, tasks

    monkeypatch.setattr(data, "get_source", FakeSource)
    monkeypatch.setattr(tasks, "mmlu_test", lambda: tasks.Loaded(MMLU, {"package": "test", "sha256": "m" * 64}))
    monkeypatch.setattr(tasks, "humaneval", lambda: tasks.Loaded(HUMANEVAL, {"package": "test", "sha256": "h" * 64}))
    monkeypatch.setattr(hub, "hub_unreachable", lambda: "huggingface.co:443 is not reachable (test)")
    return write_data_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    reference = build_tiny(root / "reference")
    same = root / "same"
    shutil.copytree(reference, same)
    return {"reference": reference, "same": same, "worse": build_tiny(root / "worse", head_scale=30.0)}


def cfg(data_dir: Path, **values) -> ValidateConfig:
    """Serial (workers 1) unless the test asks for more: worker processes are tested on their own."""
    values = {"workers": 1, **values}
    return ValidateConfig(context_length=32, chat_format="tulu", device="cpu", data_dir=data_dir, **values)


def validate_run(reference, candidates, report, vcfg, suite, calibration=(), **kw):
    """validate.run with vcfg as the validate: section and `calibration` as extra SOURCE:SPLIT pairs."""
    vcfg = vcfg.model_copy(update={"calibration": [f"{source}:{split}" for source, split in calibration]})
    return validate.run(run_config(validate_=vcfg), reference, candidates, report, suite, **kw)


def test_report_for_two_models_and_resume(tmp_path, models, fake_data):
    suite = SuiteConfig.model_validate(SUITE)
    gates = [
        Gate(metric="ppl.*", max_increase_pct=3.0, outside_noise_only=False),
        Gate(metric="kl_mean", max_value=1e-3),
    ]
    result = validate_run(
        models["reference"],
        [models["same"]],
        tmp_path / "report",
        cfg(fake_data, gates=gates),
        suite,
        calibration=[("wiki", "calibration")],
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (tmp_path / "report" / "report.png").stat().st_size > 1000
    cand = report["candidates"][0]
    assert cand["passed"] and not result.failed
    metrics = cand["metrics"]
    assert metrics["kl_mean"]["value"] == pytest.approx(0.0, abs=1e-3) and metrics["top1_agreement"]["value"] == 100.0
    assert metrics["ppl.wiki"]["value"] == pytest.approx(report["reference"]["metrics"]["ppl.wiki"]["value"])
    assert metrics["ppl.wiki"]["details"]["tokens_scored"] == 4 * 31 and metrics["ppl.wiki"]["details"]["bos"]
    assert metrics["ppl.shakespeare"]["details"]["tokens_scored"] == 2 * 31  # source_windows overrides max_windows
    assert metrics["mmlu_5shot"]["n"] == 6 and metrics["mmlu_0shot"]["ci"] is not None
    assert cand["deltas"]["mmlu_0shot"]["delta"] == 0.0 and cand["deltas"]["mmlu_0shot"]["within_noise"]
    assert set(metrics) >= {"codex_pass1", "codex_pass2", "alpaca_exact_match", "alpaca_rougeL", "ppl.shakespeare"}
    assert metrics["alpaca_exact_match"]["value"] == 100.0  # identical weights answer identically
    for key in ("gsm_direct", "gsm_cot", "bbh_direct", "bbh_cot"):  # from the data folder
        assert metrics[key]["value"] is not None and metrics[key]["n"] > 0, key
    for key in ("tydiqa_goldp", "tydiqa_goldp_em", "tydiqa_closedbook"):
        assert "not available offline: pass --data tydiqa=PATH" in metrics[key]["skipped"]
    assert metrics["alpaca_win_rate"]["skipped"].startswith("no judge configured")
    protocol = report["protocol"]
    assert protocol["name"] == "open-instruct-2023-06" and protocol["settings"]["bos"] == "as-protocol"
    assert protocol["data"]["ppl.wiki"]["tokens_sha256"] and report["versions"]["torch"]
    assert protocol["data"]["gsm_cot"]["bos"] is False and protocol["data"]["alpaca"]["bos"] is True
    assert protocol["datasets"]["gsm_cot"]["exemplars"]["path"].endswith("cot_exemplars.json")
    assert protocol["datasets"]["mmlu_5shot"]["dev"]["sha256"] and "dev" not in protocol["datasets"]["mmlu_0shot"]
    assert protocol["sources"]["wiki"]["sizes"]["evaluation"]["documents"] == 3
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## same (torch" in md and "| MMLU 0-shot (`mmlu_0shot`) |" in md and "## Protocol" in md
    assert "`tydiqa_goldp`: " in md and "cot_exemplars.json" in md
    assert "- Codex-Eval: 2 HumanEval problems; 2 samples each, pass@1 at T=0.1, pass@2 at T=0.8, top_p 0.95" in md
    assert "random.seed(42)); 8 of Wei et al.'s exemplars" in md and "stop at the first newline" in md
    assert "win rate vs text-davinci-003's outputs: no judge; with BOS." in md

    with pytest.raises(FileExistsError):
        validate_run(models["reference"], [models["same"]], tmp_path / "report", cfg(fake_data, gates=gates), suite)
    again = validate_run(
        models["reference"], [models["same"]], tmp_path / "report", cfg(fake_data, gates=gates), suite, force=True
    )
    timings = again.report["candidates"][0]["timings"]
    assert all(t["cached"] for t in timings.values() if not t["skipped"])  # nothing was recomputed


def test_violated_gate_fails_after_writing_the_report(tmp_path, models, fake_data):
    suite = SuiteConfig.model_validate(
        {**SUITE, "mmlu": {"enabled": False}, "codex": {"enabled": False}, "alpaca": {"enabled": False}}
    )
    with pytest.raises(validate.GateFailed, match=r"worse: ppl\.\*: max_increase_pct 3"):
        validate_run(models["reference"], [models["worse"]], tmp_path / "r", cfg(fake_data), suite)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert not report["candidates"][0]["passed"]
    assert report["candidates"][0]["deltas"]["ppl.wiki"]["delta_pct"] > 3.0


def test_bad_inputs_fail_before_any_work(tmp_path, models, fake_data):
    suite = SuiteConfig.model_validate(SUITE)
    with pytest.raises(ConfigError, match="mmlu_0shto"):
        validate_run(
            models["reference"],
            [],
            tmp_path / "a",
            cfg(fake_data, gates=[Gate(metric="mmlu_0shto", max_drop=1)]),
            suite,
        )
    with pytest.raises(ValueError, match="overlaps evaluation source wiki"):
        validate_run(
            models["reference"], [], tmp_path / "b", cfg(fake_data), suite, calibration=[("wiki", "evaluation")]
        )
    with pytest.raises(ValueError, match="not a model directory"):
        validate_run(models["reference"], [tmp_path], tmp_path / "c", cfg(fake_data), suite)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pipeline_step_compares_every_recorded_artifact(tmp_path, models, fake_data):
    from tulu_quant.config import RunConfig
    from tulu_quant.manifest import Manifest
    from tulu_quant.stages.base import Context

    suite = tmp_path / "tiny.yaml"
    import yaml

    suite.write_text(yaml.safe_dump({**SUITE, "mmlu": {"enabled": False}, "codex": {"enabled": False}}))
    run_cfg = RunConfig.model_validate(
        {
            "model": {"name": "tiny", "base": "b", "diff": "d", "context_length": 32, "chat_format": "tulu"},
            "run_dir": str(tmp_path),
            "stages": ["recover", "quantize", "validate"],
            "validate": {"suite": str(suite), "gates": [], "device": "cpu"},
        }
    )
    manifest = Manifest(tmp_path / "manifest.json")
    for stage, path in (("recover", models["reference"]), ("quantize", models["same"])):
        manifest.stages[stage] = {"status": "done", "output_dirs": [str(path)]}
    step = validate.step(run_cfg, Context(tmp_path, manifest))
    assert step.inputs == [models["reference"], models["same"]] and step.outputs == [tmp_path / "report"]
    assert step.config["validate"]["context_length"] == 32 and step.config["validate"]["chat_format"] == "tulu"
    summary = step.run()
    assert summary["candidates"]["same"]["passed"] and summary["candidates"]["same"]["kl_mean"] < 1e-3
    assert (tmp_path / "report" / "report.md").is_file()


def gptq_folder(root: Path, name: str, **quant) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    settings = {"bits": 4, "sym": True, "group_size": 128, "desc_act": False, **quant}
    (folder / "quantize_config.json").write_text(json.dumps(settings))
    return folder


def test_engine_plan_puts_what_vllm_loads_on_vllm_and_the_rest_native(tmp_path):
    ref, sym, asym = tmp_path / "ref", gptq_folder(tmp_path, "sym"), gptq_folder(tmp_path, "asym", sym=False)
    ref.mkdir()
    arts = [("ref", ref, "torch"), ("sym", sym, "gptq"), ("asym", asym, "gptq"), ("onnx", tmp_path / "o", "onnx")]
    native = validate.engine_plan(ValidateConfig(), arts, None, None)
    assert [c.engine for c in native] == ["native"] * 4 and not any(c.reason for c in native)
    vllm = ValidateConfig(engine="vllm")
    on_gpu = validate.engine_plan(vllm, arts, (8, 0), None)
    assert [c.engine for c in on_gpu] == ["vllm", "vllm", "native", "native"]
    assert "asymmetric" in on_gpu[2].reason and "ONNX" in on_gpu[3].reason
    avx2 = validate.engine_plan(vllm, arts, None, frozenset({"avx2"}))
    assert [c.engine for c in avx2] == ["vllm", "native", "native", "native"] and "AVX512" in avx2[1].reason
    # a server the user runs serves whatever it is given, on any machine
    given = validate.engine_plan(vllm.model_copy(update={"endpoints": {"asym": "http://a/v1"}}), arts, None, None)
    assert given[2].engine == "vllm" and given[2].endpoint == "http://a/v1"
    assert "the server at http://a/v1" in given[2].describe() and "asymmetric" in on_gpu[2].describe()
    job = validate.job_engine(on_gpu[0])
    assert job(type("J", (), {"needs_logits": True})) == "native"
    assert job(type("J", (), {"needs_logits": False})) == "vllm"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"endpoints": {"candidate": "http://a/v1"}}, "needs validate.engine: vllm"),
        ({"engine": "vllm", "endpoints": {"nope": "http://a/v1"}}, "'nope' names no artifact"),
        ({"engine": "vllm", "endpoints": {"candidate": "http://a/v1"}}, "'candidate' names no artifact"),
    ],
)
def test_engine_plan_refuses_endpoints_it_cannot_place(tmp_path, settings, message):
    arts = [("ref", tmp_path / "r", "torch"), ("a", tmp_path / "a", "torch"), ("b", tmp_path / "b", "torch")]
    with pytest.raises(ConfigError, match=message):
        validate.engine_plan(ValidateConfig(**settings), arts, None, None)


def test_engine_vllm_without_its_environment_fails_before_any_work(tmp_path, models, fake_data):
    from tulu_quant.errors import MissingLibrary

    vcfg = cfg(fake_data, engine="vllm", vllm_venv=tmp_path / "none")
    with pytest.raises(MissingLibrary, match="run `make vllm`"):
        validate_run(
            models["reference"], [models["same"]], tmp_path / "report", vcfg, SuiteConfig.model_validate(SUITE)
        )
    assert not (tmp_path / "report").exists() and not (tmp_path / ".report.work").exists()


def test_each_gguf_file_is_a_candidate_of_its_own(tmp_path, fake_data):
    """A GGUF export folder in the manifest: every file scored against the reference with llama.cpp, named by file."""
    import yaml
    from tiny import export_tiny_gguf, save_tiny_sentencepiece

    from tulu_quant.backends import context_of
    from tulu_quant.backends.gguf_backend import MAX_CONTEXT, context_limit
    from tulu_quant.config import RunConfig
    from tulu_quant.manifest import Manifest
    from tulu_quant.stages.base import Context

    reference = save_tiny_sentencepiece(tmp_path / "recovered")
    gguf = export_tiny_gguf(reference, tmp_path / "gguf", types=("F16", "Q4_0")).out
    suite = tmp_path / "tiny.yaml"
    disabled = {name: {"enabled": False} for name in ("mmlu", "codex", "gsm", "bbh", "tydiqa")}
    suite.write_text(yaml.safe_dump({**SUITE, **disabled}))
    run_cfg = RunConfig.model_validate(
        {
            "model": {"name": "tiny", "base": "b", "diff": "d", "context_length": 64, "chat_format": "tulu"},
            "run_dir": str(tmp_path),
            "stages": ["recover", "export_gguf", "validate"],
            "validate": {"suite": str(suite), "gates": [{"metric": "kl_mean", "max_value": 0.05}], "device": "cpu"},
        }
    )
    manifest = Manifest(tmp_path / "manifest.json")
    for stage, path in (("recover", reference), ("export_gguf", gguf)):
        manifest.stages[stage] = {"status": "done", "output_dirs": [str(path)]}
    step = validate.step(run_cfg, Context(tmp_path, manifest))
    assert step.inputs == [reference, gguf / "tiny-F16.gguf", gguf / "tiny-Q4_0.gguf"]
    assert context_of(gguf / "tiny-Q4_0.gguf") == 256  # the trained context, under the backend's cap
    assert context_limit({"general.architecture": "llama", "llama.context_length": 8192}) == MAX_CONTEXT == 4096
    summary = step.run()
    f16, q4 = summary["candidates"]["tiny-F16.gguf"], summary["candidates"]["tiny-Q4_0.gguf"]
    assert f16["kl_mean"] < 1e-3 < q4["kl_mean"] and f16["passed"]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    info = report["candidates"][1]["info"]
    assert info["kind"] == "gguf" and info["quantization"]["type"] == "Q4_0"
    assert info["size_bytes"] == (gguf / "tiny-Q4_0.gguf").stat().st_size
    assert "native backend (not vLLM" not in info["engine"]
    assert "## tiny-Q4_0.gguf (gguf" in (tmp_path / "report" / "report.md").read_text()


def truncated_copy(model: Path, dst: Path) -> Path:
    shutil.copytree(model, dst)
    shard = next(dst.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated: the backend cannot load it
    return dst


@pytest.mark.parametrize("workers", [1, 2])
def test_one_artifact_that_cannot_be_scored_leaves_the_others_reported_and_a_rerun_reuses_them(
    tmp_path, models, fake_data, workers
):
    suite = SuiteConfig.model_validate({**SUITE, "codex": {"enabled": False}, "alpaca": {"enabled": False}})
    broken = truncated_copy(models["reference"], tmp_path / "broken")
    vcfg = cfg(fake_data, workers=workers)
    args = (models["reference"], [broken, models["same"]], tmp_path / "report", vcfg, suite)
    with pytest.raises(validate.ArtifactFailed, match=r"1 artifact\(s\) could not be scored .*: broken: "):
        validate_run(*args)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    failed, scored = report["candidates"]
    assert failed["name"] == "broken" and failed["passed"] is False and failed["error"] and not failed["metrics"]
    assert scored["passed"] and scored["metrics"]["kl_mean"]["value"] == pytest.approx(0.0, abs=1e-3)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## broken (torch" in md and "FAILED, not scored" in md and "## same (torch" in md

    shutil.rmtree(broken)
    shutil.copytree(models["same"], broken)  # fixed: the rerun scores it and reuses everything else
    again = validate_run(*args, force=True)
    timings = {c["name"]: c["timings"] for c in again.report["candidates"]}
    assert all(t["cached"] for t in timings["same"].values() if not t["skipped"])
    assert not any(t["cached"] for t in timings["broken"].values() if not t["skipped"])
    assert all(t["cached"] for t in again.report["reference"]["timings"].values() if not t["skipped"])


def test_windows_fit_the_shortest_context_any_artifact_runs_at(tmp_path, models, caplog):
    onnx = tmp_path / "onnx"  # an ONNX export's genai_config states the context it runs at
    onnx.mkdir()
    (onnx / "genai_config.json").write_text(json.dumps({"model": {"context_length": 48}}))
    kinds = {models["reference"]: "torch", onnx: "onnx"}  # the reference: 256 positions (build_tiny)
    unset = ValidateConfig(context_length=None)
    assert validate.fit_context({models["reference"]: "torch"}, models["reference"], unset) == 256
    assert validate.fit_context(kinds, models["reference"], unset) == 48
    assert f"windows of 48 tokens, not the reference's 256: {onnx} runs at 48" in caplog.text
    assert validate.fit_context(kinds, models["reference"], ValidateConfig(context_length=32)) == 32
    with pytest.raises(ConfigError, match=rf"validate.context_length 64 exceeds the 48 tokens {onnx} runs at"):
        validate.fit_context(kinds, models["reference"], ValidateConfig(context_length=64))


def test_worker_processes_score_as_a_serial_run_and_resume_it(tmp_path, models, fake_data, caplog):
    """validate.workers 2: the reference and two candidates in two processes of one thread each give the serial
    run's numbers (up to float rounding), every comparison with the reference included; the serial run then reuses
    them from the work folder."""
    suite = SuiteConfig.model_validate(SUITE)
    artifacts = (models["reference"], [models["same"], models["worse"]])
    caplog.set_level("INFO", logger="tulu_quant")
    with pytest.raises(validate.GateFailed):  # worse fails its gates either way
        validate_run(*artifacts, tmp_path / "parallel", cfg(fake_data, workers=2), suite)
    assert "validate: 2 at a time" in caplog.text and "worse [1/14]" in caplog.text  # the workers' records, here
    with pytest.raises(validate.GateFailed):
        validate_run(*artifacts, tmp_path / "serial", cfg(fake_data), suite)
    parallel, serial = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("parallel", "serial"))
    for got, want in zip(
        [parallel["reference"], *parallel["candidates"]], [serial["reference"], *serial["candidates"]]
    ):
        assert got["name"] == want["name"] and set(got["metrics"]) == set(want["metrics"])
        for key, metric in want["metrics"].items():
            if metric["value"] is None:  # skipped in both, for the same reason
                assert got["metrics"][key]["value"] is None and got["metrics"][key]["skipped"] == metric["skipped"]
                continue
            assert got["metrics"][key]["value"] == pytest.approx(metric["value"], rel=1e-4, abs=1e-6), key
        assert not any(t["cached"] for t in got["timings"].values())
    same = parallel["candidates"][0]["metrics"]
    assert same["kl_mean"]["value"] == pytest.approx(0.0, abs=1e-3) and same["alpaca_exact_match"]["value"] == 100.0
    assert parallel["candidates"][1]["metrics"]["kl_mean"]["value"] > 0.01

    again = validate_run(
        models["reference"], [models["same"]], tmp_path / "parallel", cfg(fake_data), suite, force=True
    )
    timings = again.report["candidates"][0]["timings"]
    assert all(t["cached"] for t in timings.values() if not t["skipped"])


def test_a_reference_its_worker_cannot_score_fails_in_one_sentence_and_writes_no_report(tmp_path, models, fake_data):
    from tulu_quant.errors import UserError

    broken = truncated_copy(models["reference"], tmp_path / "broken")
    suite = SuiteConfig.model_validate({**SUITE, "codex": {"enabled": False}, "alpaca": {"enabled": False}})
    with pytest.raises(UserError, match=r"broken: the reference could not be scored: ") as failed:
        validate_run(broken, [models["same"]], tmp_path / "report", cfg(fake_data, workers=2), suite)
    assert "\n" not in str(failed.value) and not (tmp_path / "report").exists()
