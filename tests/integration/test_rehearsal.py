"""`make rehearse` made small: configs/tulu-13b.yaml through every stage on a random model with one decoder layer at
LLaMA-13B width (hidden 5120, 40 heads, intermediate 13824, vocabulary 32000 -> 32001), so a shape bug in any stage
(the added <pad> row, 40-head attention, 13824-wide MLP blocks, the ONNX builder, llama.cpp's converter, the report)
fails here instead of on a user's GPU. The run is the benchmark's own (benchmarks/rehearse.py), with a shorter
calibration set on top of its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import SHARED_DATA

from benchmarks import rehearse
from tulu_quant.config import load_config

pytestmark = pytest.mark.slow
SMALLER = {"calibrate.num_samples": "4", "calibrate.seq_len": "128", "quantize.batch_size": "4"}


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rehearsal")
    base, diff = rehearse.build_pair(root, layers=1)
    with pytest.MonkeyPatch.context() as env:
        if (SHARED_DATA / "bbh").is_dir():
            env.setenv("TULU_QUANT_DATA", str(SHARED_DATA.resolve()))
        result = rehearse.run_pipeline(base, diff, root / "run", root / "rehearse.log", SMALLER)
    return root / "run", result


def test_the_pair_has_llama_13b_shapes(rehearsed):
    run_dir, _ = rehearsed
    base = json.loads((run_dir.parent / "base" / "config.json").read_text())
    diff = json.loads((run_dir.parent / "diff" / "config.json").read_text())
    assert (base["hidden_size"], base["intermediate_size"], base["num_attention_heads"]) == (5120, 13824, 40)
    assert (base["vocab_size"], diff["vocab_size"], diff["pad_token_id"]) == (32000, 32001, 32000)


def test_every_stage_of_the_13b_config_runs_at_13b_width(rehearsed):
    run_dir, result = rehearsed
    assert result["exit_code"] == 0, result["output_tail"]
    stages = load_config(rehearse.ROOT / "configs" / "tulu-13b.yaml").stages
    assert list(result["stages"]) == stages and all(e["status"] == "done" for e in result["stages"].values())
    recovered = json.loads((run_dir / "recovered" / "config.json").read_text())
    gptq = json.loads((run_dir / "gptq" / "config.json").read_text())
    assert recovered["vocab_size"] == gptq["vocab_size"] == 32001
    assert gptq["quantization_config"]["bits"] == 4 and gptq["quantization_config"]["group_size"] == 128
    genai = json.loads((run_dir / "onnx" / "genai_config.json").read_text())["model"]
    assert genai["vocab_size"] == 32001 and genai["decoder"]["num_attention_heads"] == 40
    ggufs = sorted(p.name for p in (run_dir / "gguf").glob("*.gguf") if p.name != "imatrix.gguf")
    assert ggufs == ["tulu-13b-Q4_K_M.gguf", "tulu-13b-Q8_0.gguf"]


def test_validate_scores_every_artifact_and_publish_ships_them(rehearsed):
    run_dir, result = rehearsed
    report = json.loads((run_dir / "report" / "report.json").read_text())
    names = [c["name"] for c in report["candidates"]]
    assert len(names) == 4, names  # GPTQ, ONNX, GGUF Q4_K_M, GGUF Q8_0 against the fp16 reference
    assert all("error" not in c and c["metrics"] for c in report["candidates"]), report["candidates"]
    published = run_dir / "publish"
    assert (published / "README.md").is_file() and (published / "SHA256SUMS").is_file()
    assert "ImpACT" in (published / "README.md").read_text()


def test_plan_projects_every_stage_the_run_measured(rehearsed):
    run_dir, result = rehearsed
    skipped = rehearse.skipped_sections((run_dir.parent / "rehearse.log").read_text(errors="replace"))
    assert set(skipped) <= set(rehearse.SECTIONS.values())
    projected = rehearse.projections(rehearse.pair_config(1), skipped)
    assert set(projected["rehearsal"]) == set(result["stages"])
    for key in ("rehearsal", "layers_40_cpu", *(f"layers_40_{gpu}_as_configured" for gpu in rehearse.GPUS)):
        assert all(p["seconds"] > 0 and p["rss_bytes"] > 0 for p in projected[key].values()), key
    table = rehearse.markdown({**REPORT_FIELDS, "layers": 1, "run": result, "projection": projected})
    assert all(f"| {stage} |" in table for stage in result["stages"])


REPORT_FIELDS = {"machine": "this machine", "build_seconds": 0, "load_average_before": "-", "vllm": {"loaded": False}}
