"""Fixtures the stand-in integration tests share: the converted stand-in model and one GPTQ checkpoint of it, made
once per session by the project's own calibrate and quantize stages (quantizing takes minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import run_config

from tulu_quant.config import CalibrateConfig, QuantizeConfig, SourceWeight, StandinConfig


@pytest.fixture(scope="session")
def standin() -> Path:
    from tulu_quant.stages.standin import converted_model

    return converted_model(StandinConfig())[0]


@pytest.fixture(scope="session")
def standin_gptq(standin, tmp_path_factory):
    """4-bit g64 symmetric GPTQ v1 (the stand-in default's layout) from 16 x 256 wiki tokens: GPTQ, one forward per
    layer, without the clipping search. The default's AutoRound needs its 50 tuning steps per layer to beat this
    (2 steps: top-1 56 % against the fp16 model) and takes ten minutes on 2 cores; its export of the same layout is
    tested on the tiny model. The QuantizeResult of the quantize stage."""
    from tulu_quant.stages import calibrate, quantize

    root = tmp_path_factory.mktemp("standin-gptq")
    calibration = CalibrateConfig(mix=[SourceWeight(source="wiki")], num_samples=16, seq_len=256)
    settings = QuantizeConfig(
        bits=4, group_size=64, sym=True, damp_percent=0.01, true_sequential=False, batch_size=8, offload_to_disk=False
    )
    cfg = run_config(calibrate=calibration, quantize=settings, model__chat_format="tokenizer")
    calib = calibrate.run(cfg, standin, root / "calib").out
    return quantize.run(cfg, standin, root / "gptq", calib, log_file=root / "gptq.log")
