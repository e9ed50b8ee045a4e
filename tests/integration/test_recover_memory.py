"""Streaming proof: recovering a pair of about 1 GB on disk grows RSS by a small fraction of the model's size."""

from __future__ import annotations

import sys

from benchmarks.bench import n_params, recover_command, timed, write_random_pair

SHAPE = dict(layers=12, hidden=1024, intermediate=2816, vocab=4000)  # ~160 M parameters


def test_recover_rss_growth_is_far_below_model_size(tmp_path):
    base, diff = write_random_pair(tmp_path, SHAPE, shard_bytes=200 * 10**6)
    input_bytes = sum(f.stat().st_size for d in (base, diff) for f in d.glob("*.safetensors"))
    assert input_bytes > 900 * 10**6
    python = sys.executable
    baseline = timed([python, "-c", "import torch, safetensors, psutil, tulu_quant.cli, tulu_quant.stages.recover"])
    run = timed(recover_command(base, diff, tmp_path / "out", tmp_path / "log"))
    growth = run["peak_rss_bytes"] - baseline["peak_rss_bytes"]
    output_bytes = n_params(SHAPE) * 2
    # The largest tensor is 2816 x 1024 float32 (11.5 MB): a handful of copies, never the model.
    assert growth < 0.15 * output_bytes, (growth, output_bytes, input_bytes)
    assert (tmp_path / "out" / "recovery.json").is_file()
