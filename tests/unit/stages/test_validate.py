"""The validate stage end to end on tiny random LLaMA models, with small in-test data sets."""

from __future__ import annotations

import json
import random
import shutil
import sys
import types
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


def fake_data_module() -> types.ModuleType:
    """tulu_quant.data's API over small deterministic data: two text sources, MMLU, HumanEval; no GSM/BBH/TydiQA."""
    data = types.ModuleType("tulu_quant.data")

    class DataUnavailable(RuntimeError):
        pass

    rng = random.Random(0)
    paragraphs = {
        name: [" ".join(rng.choice(WORDS) for _ in range(90)) + "." for _ in range(12)]
        for name in ("wiki", "shakespeare")
    }

    class Source:
        def __init__(self, name):
            self.name = name

        def documents(self, split, limit=None):
            half = len(paragraphs[self.name]) // 2
            docs = paragraphs[self.name][:half] if split == "calibration" else paragraphs[self.name][half:]
            return ["\n\n".join(docs[i : i + 2]) for i in range(0, len(docs), 2)]

        def describe(self, splits):
            return {"name": self.name, "sizes": {s: {"documents": len(self.documents(s))} for s in splits}}

    def check_disjoint(calibration, evaluation):
        shared = set(map(tuple, calibration)) & set(map(tuple, evaluation))
        if shared:
            raise ValueError(f"calibration and evaluation share {sorted(shared)}")

    def load_task(name):
        raise DataUnavailable(f"{name} is not reachable from this machine")

    mmlu = [
        {
            "question": f"Question {s} {i}: which word?",
            "choices": ["river", "town", "bridge", "market"],
            "answer": "ABCD"[i % 4],
            "subject": s,
        }
        for s in ("geography", "world_history")
        for i in range(9)
    ]
    humaneval = [
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
    data.DataUnavailable = DataUnavailable
    data.get_source = Source
    data.check_disjoint = check_disjoint
    data.load_task = load_task
    data.load_mmlu = lambda: mmlu
    data.load_humaneval = lambda: humaneval
    return data


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
    "codex": {"problems": 2, "sampled_problems": 1, "samples": 2, "pass_at": [2], "max_new_tokens": 12},
    "alpaca": {"instructions": 3, "max_new_tokens": 6},
}


@pytest.fixture
def fake_data(monkeypatch):
    import tulu_quant

    module = fake_data_module()
    monkeypatch.setitem(sys.modules, "tulu_quant.data", module)
    monkeypatch.setattr(tulu_quant, "data", module, raising=False)
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    reference = build_tiny(root / "reference")
    same = root / "same"
    shutil.copytree(reference, same)
    return {"reference": reference, "same": same, "worse": build_tiny(root / "worse", head_scale=30.0)}


def cfg(**values) -> ValidateConfig:
    return ValidateConfig(context_length=32, chat_format="tulu", device="cpu", **values)


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
        cfg(gates=gates),
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
    for key in ("gsm_direct", "gsm_cot", "bbh_cot", "tydiqa_goldp", "tydiqa_closedbook"):
        assert "not reachable" in metrics[key]["skipped"]
    assert metrics["alpaca_win_rate"]["skipped"].startswith("no judge endpoint")
    assert report["protocol"]["data"]["ppl.wiki"]["tokens_sha256"] and report["versions"]["torch"]
    assert report["protocol"]["sources"]["wiki"]["sizes"]["evaluation"]["documents"] == 3
    md = (tmp_path / "report" / "report.md").read_text()
    assert (
        "## same (torch" in md and "| MMLU 0-shot (`mmlu_0shot`) |" in md and "`gsm_cot`: gsm8k is not reachable" in md
    )

    with pytest.raises(FileExistsError):
        validate_run(models["reference"], [models["same"]], tmp_path / "report", cfg(gates=gates), suite)
    again = validate_run(
        models["reference"], [models["same"]], tmp_path / "report", cfg(gates=gates), suite, force=True
    )
    timings = again.report["candidates"][0]["timings"]
    assert all(t["cached"] for t in timings.values() if not t["skipped"])  # nothing was recomputed


def test_violated_gate_fails_after_writing_the_report(tmp_path, models, fake_data):
    suite = SuiteConfig.model_validate(
        {**SUITE, "mmlu": {"enabled": False}, "codex": {"enabled": False}, "alpaca": {"enabled": False}}
    )
    with pytest.raises(validate.GateFailed, match=r"worse: ppl\.\*: max_increase_pct 3"):
        validate_run(models["reference"], [models["worse"]], tmp_path / "r", cfg(), suite)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert not report["candidates"][0]["passed"]
    assert report["candidates"][0]["deltas"]["ppl.wiki"]["delta_pct"] > 3.0


def test_bad_inputs_fail_before_any_work(tmp_path, models, fake_data):
    suite = SuiteConfig.model_validate(SUITE)
    with pytest.raises(ConfigError, match="mmlu_0shto"):
        validate_run(models["reference"], [], tmp_path / "a", cfg(gates=[Gate(metric="mmlu_0shto", max_drop=1)]), suite)
    with pytest.raises(ValueError, match="share"):
        validate_run(models["reference"], [], tmp_path / "b", cfg(), suite, calibration=[("wiki", "evaluation")])
    with pytest.raises(ValueError, match="not a model directory"):
        validate_run(models["reference"], [tmp_path], tmp_path / "c", cfg(), suite)
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
