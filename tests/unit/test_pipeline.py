"""The pipeline spine: stages run in order, unchanged ones are skipped, a killed stage leaves nothing and resumes."""

from __future__ import annotations

import json

import pytest

from tulu_quant import pipeline
from tulu_quant.checkpoint import atomic_dir
from tulu_quant.config import RunConfig
from tulu_quant.pipeline import run_pipeline
from tulu_quant.stages.base import Step

CALLS: list[str] = []


def make_step(name, payload_key):
    """A toy stage: copies its input folder's text plus a config value into its output folder."""

    def build(cfg: RunConfig, ctx) -> Step:
        out = ctx.run_dir / name
        source = cfg.model.base if name == "recover" else ctx.produced("recover")

        def work():
            CALLS.append(name)
            if getattr(cfg, "_crash", None) == name:
                with atomic_dir(out, force=True) as tmp:
                    (tmp / "half").write_text("x")
                    raise KeyboardInterrupt  # killed mid-stage
            with atomic_dir(out, force=True) as tmp:
                text = (source / "w.txt").read_text()
                (tmp / "w.txt").write_text(text + payload_key(cfg))
            return {"chars": len(text)}

        return Step(name, [source], [out], {"value": payload_key(cfg)}, work)

    return build


def use_toys(monkeypatch, steps: dict) -> None:
    """Let the pipeline run toy step() functions under the real stages' names and declarations."""
    import types

    real = pipeline.stages.load
    monkeypatch.setattr(
        pipeline.stages, "load", lambda name: types.SimpleNamespace(step=steps.get(name), STAGE=real(name).STAGE)
    )


@pytest.fixture
def toy(monkeypatch, tmp_path):
    stages = {
        "recover": make_step("recover", lambda c: c.recover.dtype),
        "calibrate": make_step("calibrate", lambda c: str(c.calibrate.seed)),
    }
    use_toys(monkeypatch, stages)
    monkeypatch.setattr(pipeline.preflight, "check", lambda cfg, stages: {})
    base = tmp_path / "base"
    base.mkdir()
    (base / "w.txt").write_text("weights")
    CALLS.clear()

    def cfg(**values):
        data = {
            "model": {"name": "t", "base": str(base), "diff": str(base)},
            "run_dir": str(tmp_path / "run"),
            "stages": ["recover", "calibrate"],
            **values,
        }
        return RunConfig.model_validate(data)

    return cfg, base


def test_runs_in_order_then_skips(toy):
    cfg, _ = toy
    first = run_pipeline(cfg())
    assert [o.skipped for o in first] == [False, False] and CALLS == ["recover", "calibrate"]
    manifest = json.loads((cfg().run_dir / "manifest.json").read_text())["stages"]
    assert manifest["calibrate"]["outputs"]["calibrate/w.txt"]["sha256"]
    assert manifest["recover"]["seconds"] >= 0 and "torch" in manifest["recover"]["versions"]
    CALLS.clear()
    assert [o.skipped for o in run_pipeline(cfg())] == [True, True] and CALLS == []


def test_config_change_reruns_that_stage_and_dependents(toy):
    cfg, _ = toy
    run_pipeline(cfg())
    CALLS.clear()
    run_pipeline(cfg(calibrate={"seed": 5}))
    assert CALLS == ["calibrate"]
    CALLS.clear()
    run_pipeline(cfg(recover={"dtype": "float32"}))
    assert CALLS == ["recover", "calibrate"]  # recover's output changed, so calibrate's input did


def test_input_change_reruns(toy):
    cfg, base = toy
    run_pipeline(cfg())
    CALLS.clear()
    (base / "w.txt").write_text("other weights")
    run_pipeline(cfg())
    assert CALLS == ["recover", "calibrate"]


def test_killed_stage_leaves_nothing_and_resumes(toy, monkeypatch):
    cfg, _ = toy
    c = cfg()
    object.__setattr__(c, "_crash", "calibrate")
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(c)
    run_dir = c.run_dir
    assert not (run_dir / "calibrate").exists() and not list(run_dir.glob(".calibrate*"))
    assert "calibrate" not in json.loads((run_dir / "manifest.json").read_text())["stages"]
    CALLS.clear()
    outcomes = run_pipeline(cfg())
    assert CALLS == ["calibrate"] and [o.skipped for o in outcomes] == [True, False]


def test_only_and_from_force(toy):
    cfg, _ = toy
    run_pipeline(cfg())
    CALLS.clear()
    run_pipeline(cfg(), only="calibrate")
    assert CALLS == ["calibrate"]
    CALLS.clear()
    run_pipeline(cfg(), start="recover")
    assert CALLS == ["recover", "calibrate"]
    with pytest.raises(ValueError, match="--only quantize: not a stage of this config"):
        run_pipeline(cfg(), only="quantize")


def test_missing_upstream_is_a_clear_error(toy):
    cfg, _ = toy
    with pytest.raises(RuntimeError, match="stage 'recover' has not produced its output yet"):
        run_pipeline(cfg(stages=["calibrate"]))
