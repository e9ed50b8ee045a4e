"""`tulu-quant sweep` with toy stages: the shared stages run once, each variant gets its own run directory with its own
settings, a failing variant becomes a row saying so without sinking the others, and the table carries every variant."""

from __future__ import annotations

import json

import pytest
import yaml
from unit.test_pipeline import use_toys

from tulu_quant import pipeline, sweep
from tulu_quant.checkpoint import atomic_dir
from tulu_quant.stages.base import Step
from tulu_quant.stages.quantize import QuantizeError

CALLS: list[str] = []


def toy_stage(name):
    def build(cfg, ctx) -> Step:
        out = ctx.run_dir / pipeline.stages.info(name).output
        source = cfg.model.base if name == "recover" else ctx.produced("recover")
        q = cfg.quantize

        def work():
            CALLS.append(f"{name}:{q.bits}-{q.group_size}" if name != "recover" and name != "calibrate" else name)
            if name == "quantize" and q.bits == 3:
                raise QuantizeError("3-bit kernels are not here")
            with atomic_dir(out, force=True) as tmp:
                (tmp / "w.bin").write_bytes(b"x" * (1000 if name == "recover" else 100 * q.bits))
                if name == "validate":
                    gptq = ctx.produced("quantize")
                    candidate = {
                        "path": str(gptq),
                        "metrics": {"kl_mean": {"value": 0.01 * q.bits}},
                        "deltas": {
                            "ppl.wiki": {"delta_pct": 10.0 / q.bits, "delta": 1.0, "within_noise": False},
                            "mmlu_0shot": {"delta": -1.0, "within_noise": True},
                        },
                        "gates": [{"metric": "ppl.*", "status": "pass"}],
                    }
                    (tmp / "report.json").write_text(json.dumps({"candidates": [candidate]}))
            return {}

        return Step(name, [source], [out], {"bits": q.bits, "group": q.group_size}, work)

    return build


@pytest.fixture
def config(monkeypatch, tmp_path):
    stages = {name: toy_stage(name) for name in ("recover", "calibrate", "quantize", "export_onnx", "validate")}
    use_toys(monkeypatch, stages)
    monkeypatch.setattr(pipeline.preflight, "check", lambda cfg, stages: {})
    base = tmp_path / "base"
    base.mkdir()
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "toy", "base": str(base), "diff": str(base)},
                "run_dir": str(tmp_path / "run"),
                "stages": ["recover", "calibrate", "quantize", "export_onnx", "validate"],
                "quantize": {"bits": 4},
            }
        )
    )
    CALLS.clear()
    return path


def test_sweep_runs_shared_stages_once_and_tabulates_every_variant(config, tmp_path):
    table = sweep.run(config, ["gptq-4bit-128g", "gptq-8bit-128g", "gptq-3bit-128g"], speed=False)
    assert CALLS.count("recover") == 1 and CALLS.count("calibrate") == 1
    assert "quantize:4-128" in CALLS and "quantize:8-128" in CALLS and "validate:8-128" in CALLS
    rows = {r["variant"]: r for r in json.loads((table.parent / "sweep.json").read_text())}
    assert rows["gptq-8bit-128g"]["bits"] == 8 and rows["gptq-4bit-128g"]["bits"] == 4  # the variant, not the YAML's 4
    assert rows["gptq-8bit-128g"]["compression"] == pytest.approx(1000 / 800)
    assert rows["gptq-4bit-128g"]["perplexity_kl"] == "wiki +2.5%, KL 0.040"
    assert rows["gptq-4bit-128g"]["gates"] == "1 passed"
    assert rows["gptq-3bit-128g"]["gates"].startswith("error: ") and "3-bit kernels" in rows["gptq-3bit-128g"]["gates"]
    assert (tmp_path / "run" / "sweep" / "gptq-8bit-128g" / "gptq" / "w.bin").stat().st_size == 800
    md = table.read_text()
    assert all(f"| {name} |" in md for name in rows)
    # Run again: every finished stage is skipped (the failed variant is retried and fails again).
    CALLS.clear()
    sweep.run(config, ["gptq-4bit-128g", "gptq-8bit-128g", "gptq-3bit-128g"], speed=False)
    assert CALLS == ["quantize:3-128"]
