"""Quantization quality on the stand-in: `python -m benchmarks.bench_quant --out DIR [--jobs 2] [--only NAME ...]`.

Every row is one model scored by the same protocol (docs/standin.md): perplexity over 24 non-overlapping windows of 512
tokens of the wiki evaluation split (the second half of the articles) and of the Shakespeare evaluation plays, and KL
divergence and top-1 agreement against the fp16 model on the wiki windows, weights computed in float32. GPTQ rows are
made by this project's own stages (`calibrate` on the wiki calibration split, the first half, unless a row says
otherwise; `quantize` through GPTQModel or AutoRound), then their checkpoint is dequantized (qweight, qzeros, scales,
g_idx -> W) into a float32 model, so the rows differ only in their weights. RTN rows round each group of the fp16
weights to the nearest grid point (GPTQ's quantizer grid).

Which runtimes load a row's checkpoint: transformers is tried (load through GPTQModel, generate 8 tokens); vLLM's
verdict is its 0.32 rules (tulu_quant.backends.vllm_backend.vllm_refusal, checked against vLLM itself by
tests/integration/test_vllm_cpu.py) for a CUDA GPU and an AVX512 CPU; the ONNX builder is tried when it applies
(4-bit GPTQ v1 -> int4 MatMulNBits).

Each row runs in its own process (peak RSS is that row's), writes DIR/rows/NAME.json and is reused by later runs (delete
the file to measure it again); DIR/results.json and DIR/results.md hold the table of all rows present.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import load_average, machine

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WINDOWS, WINDOW_LEN = 24, 512
CALIBRATION = {"num_samples": 128, "seq_len": 512, "seed": 0}  # the reference figures' calibration (docs/standin.md)
# GPTQModel 7.6's own defaults for a 4-bit g64 run: damp 0.05, group-aware reordering, bfloat16 forward on CPU.
GPTQMODEL_DEFAULTS = {"bits": 4, "group_size": 64, "damp_percent": 0.05, "compute_dtype": "bfloat16"}

# The best symmetric GPTQ (the stand-in default before AutoRound): the GPTQ rows below vary one lever each from it.
SYM_DEFAULT = {
    "bits": 4,
    "group_size": 64,
    "sym": True,
    "damp_percent": 0.01,
    "mse": 2.4,
    "true_sequential": False,
    "batch_size": 8,
}
# AutoRound through the quantize stage (quantize.method: autoround), float32 forward and tuning.
AUTOROUND = {
    "method": "autoround",
    "bits": 4,
    "group_size": 64,
    "sym": True,
    "batch_size": 8,
    "compute_dtype": "float32",
}
MIXES = {  # calibrate settings "mix" -> the calibration sources
    "instructions": [{"source": "instructions", "weight": 1}],
    "wiki+instructions": [{"source": "wiki", "weight": 1}, {"source": "instructions", "weight": 1}],
}

# name -> (kind, quantize settings, calibrate settings, what it shows). Order = table order.
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "fp16": ("fp16", {}, {}, "the stand-in's weights"),
    "rtn-g64-sym": ("rtn", {"bits": 4, "group_size": 64, "sym": True}, {}, "round to nearest"),
    "rtn-g64-asym": ("rtn", {"bits": 4, "group_size": 64, "sym": False}, {}, "round to nearest, zero points"),
    "gptqmodel-g64-sym": ("gptq", {**GPTQMODEL_DEFAULTS, "sym": True}, {}, "GPTQModel 7.6 defaults"),
    "gptqmodel-g64-asym": ("gptq", {**GPTQMODEL_DEFAULTS, "sym": False}, {}, "GPTQModel 7.6 defaults, asym"),
    "asym-mse": (
        "gptq",
        {"bits": 4, "group_size": 64, "sym": False, "damp_percent": 0.01, "mse": 2.4},
        {},
        "+ damp 0.01, clipping search",
    ),
    "asym-mse-gptaq": (
        "gptq",
        {"bits": 4, "group_size": 64, "sym": False, "damp_percent": 0.01, "mse": 2.4, "gptaq_alpha": 0.25},
        {},
        "+ damp 0.01, clipping search, GPTAQ",
    ),
    "asym-mse-n256": (
        "gptq",
        {"bits": 4, "group_size": 64, "sym": False, "damp_percent": 0.01, "mse": 2.4},
        {"num_samples": 256},
        "+ damp 0.01, clipping search, 2x calibration",
    ),
    "asym-mse-foem": (
        "gptq",
        {"bits": 4, "group_size": 64, "sym": False, "damp_percent": 0.01, "mse": 2.4, "foem_beta": 0.2},
        {},
        "+ damp 0.01, clipping search, FOEM",
    ),
    "asym-mse-nts": (
        "gptq",
        {
            "bits": 4,
            "group_size": 64,
            "sym": False,
            "damp_percent": 0.01,
            "mse": 2.4,
            "true_sequential": False,
            "batch_size": 8,
        },
        {},
        "+ damp 0.01, clipping search, one forward per layer (not true sequential), 8 samples per batch",
    ),
    # Issue: the levers, on the symmetric grid every runtime loads (vLLM refuses asymmetric GPTQ).
    "sym-mse-nts": ("gptq", {**SYM_DEFAULT}, {}, "the best symmetric GPTQ (the stand-in default before AutoRound)"),
    "sym-mse-nts-gptaq": ("gptq", {**SYM_DEFAULT, "gptaq_alpha": 0.25}, {}, "+ GPTAQ"),
    "sym-mse-nts-g32": ("gptq", {**SYM_DEFAULT, "group_size": 32}, {}, "group 32 (0.31 more bits per weight)"),
    "sym-mse-nts-actorder-static": (
        "gptq",
        {**SYM_DEFAULT, "desc_act": True, "static_groups": True},
        {},
        "act order with static groups",
    ),
    "sym-mse-nts-natural": (
        "gptq",
        {**SYM_DEFAULT, "act_group_aware": False},
        {},
        "natural column order (no group-aware reordering)",
    ),
    "sym-mse-nts-damp0.05": ("gptq", {**SYM_DEFAULT, "damp_percent": 0.05}, {}, "damp 0.05"),
    "sym-mse-nts-n512": ("gptq", {**SYM_DEFAULT}, {"num_samples": 512}, "4x calibration samples"),
    "sym-mse-nts-len256": ("gptq", {**SYM_DEFAULT}, {"num_samples": 256, "seq_len": 256}, "same tokens, half length"),
    "sym-mse-nts-chat": ("gptq", {**SYM_DEFAULT}, {"mix": "instructions"}, "chat-format instructions"),
    "sym-mse-nts-mixed": (
        "gptq",
        {**SYM_DEFAULT},
        {"mix": "wiki+instructions"},
        "half wiki text, half chat-format instructions",
    ),
    "autoround-sym-i50": ("gptq", {**AUTOROUND, "autoround_iters": 50}, {}, "AutoRound, its light recipe"),
    "autoround-sym-i50-b4": (
        "gptq",
        {**AUTOROUND, "autoround_iters": 50, "batch_size": 4},
        {},
        "AutoRound, light recipe, 4 samples per step",
    ),
    "autoround-sym-i30-b4": (
        "gptq",
        {**AUTOROUND, "autoround_iters": 30, "batch_size": 4},
        {},
        "AutoRound, 30 steps of 4 samples",
    ),
    "autoround-sym-i40-b4": (
        "gptq",
        {**AUTOROUND, "autoround_iters": 40, "batch_size": 4},
        {},
        "AutoRound, 40 steps of 4 samples",
    ),
    "autoround-sym-i200": ("gptq", {**AUTOROUND, "autoround_iters": 200}, {}, "AutoRound, its default"),
}


# ------------------------------------------------------------------------------------------------------ pure math


def rtn(weight, bits: int, group_size: int, sym: bool):
    """Round-to-nearest per group of `group_size` input columns, GPTQ's grid: levels 0..2^b-1, scale = range / maxq,
    zero = (maxq + 1) / 2 (sym, range symmetric about 0) or round(-min / scale) (asym); the range always spans 0."""
    import torch

    maxq = 2**bits - 1
    out = torch.empty_like(weight)
    for start in range(0, weight.shape[1], group_size):
        w = weight[:, start : start + group_size]
        low = w.min(dim=1, keepdim=True).values.clamp(max=0)
        high = w.max(dim=1, keepdim=True).values.clamp(min=0)
        if sym:
            high = torch.maximum(low.abs(), high)
            low = -high
        scale = ((high - low) / maxq).clamp(min=1e-12)
        zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-low / scale)
        out[:, start : start + group_size] = scale * (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero)
    return out


def unpack(packed, bits: int, dim: int):
    """int32 words -> the 32/bits integer codes each holds, along dim 0 (qweight rows) or 1 (qzeros columns)."""
    import torch

    if 32 % bits:
        raise ValueError(f"{bits}-bit codes do not fill int32 words evenly; the bench dequantizes 2, 4 and 8 bits")
    per_word = 32 // bits
    shifts = torch.arange(per_word, dtype=torch.int32) * bits
    words = packed.to(torch.int32)
    if dim == 0:
        codes = (words.unsqueeze(1) >> shifts.view(1, per_word, 1)) & (2**bits - 1)
        return codes.reshape(words.shape[0] * per_word, words.shape[1])
    codes = (words.unsqueeze(2) >> shifts.view(1, 1, per_word)) & (2**bits - 1)
    return codes.reshape(words.shape[0], words.shape[1] * per_word)


def dequantize(qweight, qzeros, scales, g_idx, bits: int):
    """GPTQ v1 tensors -> W [out, in] in float32: W[:, i] = scale[g] * (q[i] - (z[g] + 1)), g = g_idx[i] (v1 stores
    zero - 1)."""
    codes = unpack(qweight, bits, 0).float()  # [in, out]
    zeros = unpack(qzeros, bits, 1).float() + 1  # [groups, out]
    groups = g_idx.long()
    return ((codes - zeros[groups]) * scales.float()[groups]).t().contiguous()


# ------------------------------------------------------------------------------------------------------ models


def float32_model(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


def linear_modules(model):
    return [(name, module) for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in LINEARS]


def rtn_model(model_dir: Path, bits: int, group_size: int, sym: bool):
    model = float32_model(model_dir)
    for _, module in linear_modules(model):
        module.weight.data = rtn(module.weight.data, bits, group_size, sym)
    return model


def dequantized_model(model_dir: Path, gptq_dir: Path, bits: int):
    """The fp16 model's architecture with every linear replaced by the GPTQ checkpoint's dequantized weights."""
    from safetensors.torch import load_file

    state = {}
    for path in sorted(gptq_dir.glob("*.safetensors")):
        state.update(load_file(path))
    model = float32_model(model_dir)
    for name, module in linear_modules(model):
        parts = [state[f"{name}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")]
        module.weight.data = dequantize(*parts, bits)
    return model


def perplexity(model, windows: list[list[int]]) -> float:
    return scores(model, windows)["ppl"]


def scores(model, windows: list[list[int]], reference=None) -> dict[str, float]:
    """Perplexity of `model` over the windows; with a reference model also the mean KL(reference || model) per token
    and the top-1 agreement (%) of their next-token predictions, over the same tokens."""
    import numpy as np
    import torch

    from tulu_quant.eval.perplexity import kl_per_token, log_softmax, token_nll

    total, count, kls, agree = 0.0, 0, [], []
    with torch.no_grad():
        for ids in windows:
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            nll = token_nll(logits, ids)
            total, count = total + float(nll.sum()), count + len(nll)
            if reference is not None:
                ref = reference(torch.tensor([ids])).logits[0].float().numpy()
                kls.append(kl_per_token(log_softmax(ref[:-1]), logits[:-1]))
                agree.append(ref[:-1].argmax(-1) == logits[:-1].argmax(-1))
    out = {"ppl": math.exp(total / count)}
    if reference is not None:
        out.update(kl=float(np.concatenate(kls).mean()), top1=float(100 * np.concatenate(agree).mean()))
    return out


def eval_windows(model_dir: Path, source: str = "wiki") -> list[list[int]]:
    from transformers import AutoTokenizer

    from tulu_quant.data import get_source
    from tulu_quant.eval.perplexity import bos_id_of, make_windows, tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenize_documents(tokenizer, get_source(source).documents("evaluation"))
    return make_windows(ids, WINDOW_LEN, bos_id_of(tokenizer), WINDOWS).inputs


# ------------------------------------------------------------------------------------------------------ runtimes


def runtimes(gptq_dir: Path, model_dir: Path, out: Path) -> dict[str, str]:
    """Which runtimes load the checkpoint: "yes", or the first line of why not."""
    from tulu_quant.backends.vllm_backend import vllm_refusal

    quant = json.loads((gptq_dir / "config.json").read_text())["quantization_config"]
    found: dict[str, str] = {}
    for where, kwargs in (("vllm_cuda", {"cuda_capability": (8, 0)}), ("vllm_cpu", {"cpu_flags": {"avx512f"}})):
        why = vllm_refusal("gptq", quant, **kwargs)
        found[where] = "yes" if why is None else why
    try:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(gptq_dir, device_map="cpu")
        produced = model.generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=8, do_sample=False)
        found["transformers"] = "yes" if produced.shape[1] == 12 else f"generated {produced.shape[1] - 4} tokens"
    except Exception as err:  # the verdict is the point: record it, do not stop the row
        found["transformers"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if int(quant.get("bits", 0)) == 4:
        try:
            from tulu_quant.config import ExportOnnxConfig, RunConfig
            from tulu_quant.stages import export_onnx

            cfg = RunConfig(model={"chat_format": "tokenizer"}, export_onnx=ExportOnnxConfig(precision="int4"))
            target = out / "onnx" / gptq_dir.name
            export_onnx.run(cfg, model_dir, target, gptq_dir=gptq_dir, force=True, log_file=out / "logs" / "onnx.log")
            found["onnx_builder"] = "yes"
        except Exception as err:
            found["onnx_builder"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return found


# ------------------------------------------------------------------------------------------------------ one row


def run_row(name: str, model_dir: Path, out: Path) -> dict[str, Any]:
    """Measure one row in this process; returns its JSON record."""
    import torch

    from tulu_quant.config import CalibrateConfig, QuantizeConfig, RunConfig
    from tulu_quant.progress import measure
    from tulu_quant.stages import calibrate, quantize

    torch.manual_seed(0)
    kind, qsettings, csettings, note = ROWS[name]
    record: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "quantize": qsettings,
        "note": note,
        "machine": machine(),
        "load_average_before": load_average(),
    }
    texts = {"wiki": eval_windows(model_dir, "wiki"), "shakespeare": eval_windows(model_dir, "shakespeare")}
    gptq_dir = None
    if kind == "fp16":
        model = float32_model(model_dir)
    elif kind == "rtn":
        model = rtn_model(model_dir, qsettings["bits"], qsettings["group_size"], qsettings["sym"])
    else:
        mix = MIXES.get(csettings.get("mix"), [{"source": "wiki", "weight": 1}])
        ccfg = CalibrateConfig(**{**CALIBRATION, **csettings, "mix": mix})
        mix_name = csettings.get("mix", "wiki")
        calib_dir = out / "calib" / f"{mix_name}-n{ccfg.num_samples}-l{ccfg.seq_len}-s{ccfg.seed}"
        calibrate.run(RunConfig(model={"chat_format": "tokenizer"}, calibrate=ccfg), model_dir, calib_dir)
        qcfg = QuantizeConfig(**{"offload_to_disk": False, **qsettings})
        run_cfg = RunConfig(model={"chat_format": "tokenizer"}, calibrate=ccfg, quantize=qcfg)
        gptq_dir = out / "gptq" / name
        log_file = out / "logs" / f"{name}.log"
        with measure() as usage:
            result = quantize.run(run_cfg, model_dir, gptq_dir, calib_dir, True, log_file=log_file)
        written = json.loads((gptq_dir / quantize.RECORD_FILE).read_text())
        record.update(
            calibrate=ccfg.model_dump(mode="json"),
            quantize=qcfg.model_dump(mode="json"),
            compute_dtype=written["compute_dtype"],
            seconds=round(result.seconds, 1),
            peak_rss=usage.peak_rss,
            mean_loss=result.mean_loss,
        )
        record["bytes"] = sum(p.stat().st_size for p in gptq_dir.glob("*.safetensors"))
        model = dequantized_model(model_dir, gptq_dir, int(qsettings["bits"]))
    reference = None if kind == "fp16" else float32_model(model_dir)
    wiki = scores(model, texts["wiki"], reference)
    record.update(wiki_ppl=round(wiki["ppl"], 3), kl=wiki.get("kl"), top1=wiki.get("top1"))
    record["shakespeare_ppl"] = round(scores(model, texts["shakespeare"])["ppl"], 3)
    if gptq_dir is not None:
        del model, reference
        record["runtimes"] = runtimes(gptq_dir, model_dir, out)
    record["load_average_after"] = load_average()
    record["windows"] = f"{len(texts['wiki'])} x {len(texts['wiki'][0])}"
    return record


# ------------------------------------------------------------------------------------------------------ the table


WHERE = {"offload_to_disk", "device"}  # where the work happens, not what it computes


@functools.cache
def standin_config():
    """configs/standin.yaml, read once."""
    from tulu_quant.config import load_config

    return load_config(Path(__file__).resolve().parent.parent / "configs" / "standin.yaml")


def standin_default() -> dict[str, Any]:
    """configs/standin.yaml's quantize: settings, without WHERE."""
    return standin_config().quantize.model_dump(exclude=WHERE)


def is_standin_default(r: dict[str, Any], default: dict[str, Any]) -> bool:
    """Whether a GPTQ row's settings (and calibration) are the stand-in's default ones."""
    from tulu_quant.config import QuantizeConfig

    calibrate = standin_config().calibrate
    c = r.get("calibrate") or {}
    if r["kind"] != "gptq" or c.get("num_samples") != calibrate.num_samples:
        return False
    if c.get("seq_len", CALIBRATION["seq_len"]) != calibrate.seq_len or len(c.get("mix") or [{}]) != 1:
        return False
    if (c.get("mix") or [{"source": "wiki"}])[0]["source"] != "wiki":
        return False
    return QuantizeConfig.model_validate(r["quantize"]).model_dump(exclude=WHERE) == default


def loads_in(r: dict[str, Any]) -> str:
    """The runtimes that load a row's checkpoint (transformers, vLLM CUDA / CPU, ONNX builder), with the first refusal
    in a footnote-sized phrase."""
    found = r.get("runtimes")
    if not found:
        return ""
    names = {"transformers": "transformers", "vllm_cuda": "vLLM CUDA", "vllm_cpu": "vLLM CPU", "onnx_builder": "ONNX"}
    yes = [label for key, label in names.items() if found.get(key) == "yes"]
    no = [f"not {label} ({found[key]})" for key, label in names.items() if found.get(key) not in (None, "yes")]
    return ", ".join(yes + no)


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.3f}" if value and reference else ""


TIME_BASE = "asym-mse-nts"  # the stand-in default before the symmetric and AutoRound rows: quantize time is relative


def time_ratio(r: dict[str, Any], base: dict[str, Any]) -> str:
    """r's quantize seconds over the TIME_BASE row's, only where both were measured alone on the same machine."""
    alone = r.get("rows_at_once", 1) == 1 and base.get("rows_at_once", 1) == 1
    same = alone and r.get("machine") and r.get("machine") == base.get("machine")
    return f"{r['seconds'] / base['seconds']:.2f}x" if same and "seconds" in r and base.get("seconds") else ""


def table(records: list[dict[str, Any]]) -> str:
    fp16 = next((r for r in records if r["kind"] == "fp16"), {})
    base = next((r for r in records if r["name"] == TIME_BASE), {})
    default = standin_default()
    rows = [
        "| row | settings | wiki ppl | wiki vs fp16 | Shakespeare vs fp16 | KL | top-1 | quantize seconds | "
        f"time vs {TIME_BASE} (alone, same machine) | load average before/after | peak RSS | loads in |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        q = r["quantize"]
        if r["kind"] == "fp16":
            settings = r["note"]
        else:
            grid = f"{q['bits']}-bit g{q['group_size']} {'sym' if q['sym'] else 'asym'}"
            autoround = r["kind"] == "autoround" or q.get("method") == "autoround"
            detail = _autoround_settings(r) if autoround else _gptq_settings(r) if r["kind"] == "gptq" else ""
            settings = f"{grid}{detail}; {r['note']}"
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else ""
        rss = f"{r['peak_rss'] / 2**30:.2f} GiB" if "peak_rss" in r else ""
        load = (
            f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f}"
            if "load_average_before" in r
            else ("not recorded (shared machine)" if seconds else "")
        )
        kl = f"{r['kl']:.4f}" if r.get("kl") is not None else ""
        top1 = f"{r['top1']:.1f} %" if r.get("top1") is not None else ""
        name = f"**{r['name']} (stand-in default)**" if is_standin_default(r, default) else r["name"]
        rows.append(
            f"| {name} | {settings} | {r['wiki_ppl']:.2f} | {ratio(r['wiki_ppl'], fp16.get('wiki_ppl'))} | "
            f"{ratio(r.get('shakespeare_ppl'), fp16.get('shakespeare_ppl'))} | {kl} | {top1} | {seconds} | "
            f"{time_ratio(r, base)} | {load} | "
            f"{rss} | {loads_in(r)} |"
        )
    return "\n".join(rows)


def _autoround_settings(r: dict[str, Any]) -> str:
    c = r["calibrate"]
    steps = r["quantize"].get("autoround_iters", r["quantize"].get("iters"))  # records before the quantize stage had it
    return f", {steps} steps per layer, float32, calibration {c['num_samples']} x {c['seq_len']}"


def _gptq_settings(r: dict[str, Any]) -> str:
    q, c = r["quantize"], r["calibrate"]
    order = "act order" if q["desc_act"] else ("GAR" if q.get("act_group_aware") in (None, True) else "natural order")
    if q.get("gptaq_alpha") and not q["desc_act"]:
        order = "natural order"  # GPTAQ has no group-aware reordering path
    extra = [f"damp {q['damp_percent']}", order, f"{r.get('compute_dtype', q['compute_dtype'])} forward"]
    if q.get("gptaq_alpha"):
        extra.append(f"GPTAQ alpha {q['gptaq_alpha']}")
    if q.get("mse"):
        extra.append(f"mse {q['mse']}")
    if q.get("static_groups"):
        extra.append("static groups")
    if not q.get("true_sequential", True):
        extra.append("not true-sequential")
    mix = "+".join(m["source"] for m in c.get("mix") or [{"source": "wiki"}])
    return f", {', '.join(extra)}, calibration {c['num_samples']} x {c['seq_len']} {mix}"


def write_report(out: Path, names: list[str], model_dir: Path) -> list[dict[str, Any]]:
    records = [
        json.loads((out / "rows" / f"{n}.json").read_text()) for n in names if (out / "rows" / f"{n}.json").is_file()
    ]
    command = "python -m benchmarks.bench_quant --out " + str(out)
    (out / "results.json").write_text(
        json.dumps({"machine": machine(), "model": str(model_dir), "command": command, "rows": records}, indent=2)
    )
    md = (
        f"Perplexity of the stand-in ({WINDOWS} windows x {WINDOW_LEN} tokens of the wiki and Shakespeare evaluation "
        f"splits), KL and top-1 against fp16 on the wiki windows, float32 compute; `{command}` on {machine()}.\n\n"
        f"{table(records)}\n"
    )
    (out / "results.md").write_text(md)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_quant", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--model", type=Path, help="fp16 model (default: the stand-in's HF conversion, built if needed)"
    )
    parser.add_argument("--only", action="append", choices=list(ROWS), help="measure only these rows (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="rows measured at once, each in its own process")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: measure one row here
    parser.add_argument("--beside", type=int, default=1, help=argparse.SUPPRESS)  # internal: rows running at once
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model is None:
        from tulu_quant.config import StandinConfig
        from tulu_quant.stages.standin import converted_model

        args.model = converted_model(StandinConfig())[0]
    out = args.out.resolve()
    (out / "rows").mkdir(parents=True, exist_ok=True)
    if args.row:
        record = {**run_row(args.row, args.model, out), "rows_at_once": args.beside}
        (out / "rows" / f"{args.row}.json").write_text(json.dumps(record, indent=2))
        return 0
    names = args.only or list(ROWS)
    todo = [n for n in names if not (out / "rows" / f"{n}.json").is_file()]

    def measure_row(name: str) -> None:
        start = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench_quant",
            "--out",
            str(out),
            "--model",
            str(args.model),
            "--row",
            name,
            "--beside",
            str(min(max(1, args.jobs), len(todo))),
        ]
        with open(out / f"{name}.stderr.log", "w") as err:
            code = subprocess.run(command, stderr=err, stdout=err).returncode
        logging.info(
            "%s: %s in %.0f s",
            name,
            "done" if code == 0 else f"FAILED (exit {code}, see {err.name})",
            time.perf_counter() - start,
        )

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(measure_row, todo))
    for record in write_report(out, list(ROWS), args.model):
        logging.info("%-28s wiki ppl %.2f", record["name"], record["wiki_ppl"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
