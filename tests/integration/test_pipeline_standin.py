"""The whole pipeline on the stand-in with reduced settings: every stage, the manifest, the summary, the model card;
then a run killed in the middle of a stage resumes and produces the same files, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from shared_data import SHARED_DATA

from tulu_quant.config import load_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "tulu-quant")

SUITE = {
    "description": "integration test",
    "seed": 0,
    "bootstrap_samples": 200,
    "perplexity": {"sources": ["wiki"], "split": "evaluation", "max_windows": 4, "kl_windows": 2},
    "mmlu": {"shots": [0], "subjects": 1, "per_subject": 3, "max_prompt_tokens": 512},
    "gsm": {"enabled": False},
    "bbh": {"enabled": False},
    "tydiqa": {"enabled": False},
    "codex": {"problems": 1, "samples": 2, "temperatures": {2: 0.8}, "max_new_tokens": 48},
    "alpaca": {"instructions": 1, "max_new_tokens": 16},
}


def reduced_config(tmp: Path) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "standin.yaml").read_text())
    data["run_dir"] = str(tmp / "run")
    data["recover"]["verify"] = False
    data["calibrate"].update(num_samples=16, seq_len=256)
    # GPTQ without the clipping search instead of the default's AutoRound (50 tuning steps per layer, ten minutes on 2
    # cores): the stages are under test here; AutoRound's own tests are in test_quantize.py and test_vllm_cpu.py.
    data["quantize"].update(method="gptq", mse=0.0)
    (tmp / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    data["validate"].update(  # the shared data folder wherever the checkout is (its absence is reported, not an error)
        data_dir=str(SHARED_DATA.resolve()),
        suite=str(tmp / "suite.yaml"),
        gates=[{"metric": "ppl.*", "max_increase_pct": 50.0, "outside_noise_only": False}],
    )
    path = tmp / "standin-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(config: Path, *extra: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "-q", "run", "--config", str(config), *extra], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def output_hashes(run_dir: Path, stages) -> dict[str, str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return {f: v["sha256"] for s in stages for f, v in manifest[s]["outputs"].items()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    config = reduced_config(tmp)
    done = run(config)
    assert done.returncode == 0, done.stderr[-4000:]
    return config, load_config(config).run_dir, done


def test_every_stage_ran_and_is_recorded(finished):
    config, run_dir, done = finished
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert list(manifest) == [
        "standin",
        "recover",
        "calibrate",
        "quantize",
        "export_onnx",
        "export_gguf",
        "validate",
        "publish",
    ]
    for entry in manifest.values():
        assert entry["status"] == "done" and entry["outputs"] and entry["seconds"] >= 0 and entry["peak_rss_bytes"] > 0
    assert (run_dir / "gptq" / "quantize_config.json").is_file() and (run_dir / "onnx" / "genai_config.json").is_file()
    summary = done.stderr
    gguf = json.loads((run_dir / "gguf" / "gguf.json").read_text())
    assert [f["type"] for f in gguf["files"]] == ["Q4_K_M"] and gguf["imatrix"]["samples"] == 16
    assert gguf["files"][0]["verification"]["llama_tokenizer_agrees"] is True
    for label in ("fp16 (reference)", "GPTQ", "ONNX", "GGUF Q4_K_M", "smaller", "publishable folder"):
        assert label in summary, label
    # A second run skips everything.
    again = run(config)
    assert again.returncode == 0 and again.stderr.count("skipped") >= 7


def test_model_card_carries_the_measured_numbers(finished):
    _, run_dir, _ = finished
    report = json.loads((run_dir / "report" / "report.json").read_text())
    card = (run_dir / "publish" / "README.md").read_text()
    gptq = next(c for c in report["candidates"] if Path(c["path"]).name == "gptq")
    ppl = gptq["metrics"]["ppl.wiki"]["value"]
    reference = report["reference"]["metrics"]["ppl.wiki"]["value"]
    assert f"{ppl:.3f}" in card and f"{reference:.3f}" in card
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "license: apache-2.0" in card
    assert "## Protocol" in card and "`open-instruct-2023-06`" in card and "- Codex-Eval: 1 HumanEval problems" in card
    # the AlpacaFarm win rate without a judge is a sentence, not a number; without AlpacaEval's data, a sentence too
    if (SHARED_DATA / "alpaca_eval").is_dir():
        assert "no judge configured" in card
    else:
        assert "not available offline: pass --data alpaca_eval=PATH" in card
    sums = (run_dir / "publish" / "SHA256SUMS").read_text()
    assert "model.safetensors" in sums and "onnx/genai_config.json" in sums
    assert "gguf/standin-smollm2-135m-Q4_K_M.gguf" in sums and "gguf/imatrix.gguf" in sums
    gguf = next(c for c in report["candidates"] if c["path"].endswith("Q4_K_M.gguf"))
    assert "## GGUF (llama.cpp, Ollama, LM Studio)" in card
    assert f"{gguf['deltas']['ppl.wiki']['delta_pct']:+.2f} %" in card  # the measured number, from the report


def test_killed_run_resumes_with_the_same_hashes(finished, tmp_path):
    config, run_dir, _ = finished
    # A copy of the finished run that must redo quantize (the stages after it were tested by the first run).
    data = yaml.safe_load(config.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["stages"] = data["stages"][: data["stages"].index("quantize") + 1]
    resumed_config = tmp_path / "resume.yaml"
    resumed_config.write_text(yaml.safe_dump(data))
    shutil.copytree(run_dir, tmp_path / "run", symlinks=True)
    later = ["quantize", "export_onnx", "export_gguf", "validate", "publish"]
    manifest_path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for stage in later:
        manifest["stages"].pop(stage)
    manifest_path.write_text(json.dumps(manifest))
    for folder in ("gptq", "onnx", "gguf", "report", "publish"):
        shutil.rmtree(tmp_path / "run" / folder)

    proc = subprocess.Popen(
        [CLI, "-q", "run", "--config", str(resumed_config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "run").glob(".gptq.partial-*")):
        time.sleep(0.5)
    time.sleep(3)  # inside the quantize stage
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "gptq").exists()  # nothing half-written looks finished
    assert "quantize" not in json.loads(manifest_path.read_text())["stages"]

    done = run(resumed_config)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count("skipped") >= 3  # standin, recover, calibrate were not redone
    assert not list((tmp_path / "run").glob(".gptq.partial-*"))
    # The checkpoint is byte-identical; only the two records of wall times and per-layer timings may differ.
    timing_records = ("gptq/quant_log.csv", "gptq/quantization.json")
    original = {k: v for k, v in output_hashes(run_dir, ["quantize"]).items() if k not in timing_records}
    resumed = {k: v for k, v in output_hashes(tmp_path / "run", ["quantize"]).items() if k not in timing_records}
    assert any(k.endswith(".safetensors") for k in original) and resumed == original
