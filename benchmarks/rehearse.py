"""`make rehearse`: the Tulu 13B path run at real shapes on a CPU, stage by stage, next to what `tulu-quant plan`
projects.

1. A random LLaMA-1-13B-shaped pair is written offline: the base (fp16, vocabulary 32000, a SentencePiece tokenizer
   padded to 32000 pieces like LLaMA's) and a Tulu-style diff (float32, vocabulary 32001 with <pad>), every layer at
   13B width (hidden 5120, 40 heads, intermediate 13824), N decoder layers (2 by default).
2. `tulu-quant run --config configs/tulu-13b.yaml` runs every stage on it (recover, calibrate, quantize with AutoRound,
   ONNX int4, GGUF Q4_K_M + Q8_0, validate, publish). Only what REHEARSAL_SETTINGS lists is changed, each for the reason
   given there.
3. vLLM (CPU build, `.venv-vllm`) loads the GPTQ checkpoint and generates.
4. The manifest's per-stage wall time and peak RSS go beside `tulu_quant.plan.stage_projection` for the same shapes and
   settings, then that projection for 40 layers on this CPU and on the GPUs plan knows.

    python -m benchmarks.rehearse --out bench-out [--layers N]

writes OUT/rehearse.json and OUT/rehearse.md (the section `python -m benchmarks.bench docs` puts in
docs/benchmarks.md), with the run's log in OUT/rehearse.log. The pair and the run directory (OUT/rehearse-work, about
12 GB at N = 2) are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .bench import LLAMA_13B, write_random_model
from .common import ROOT, load_average, machine, shown, tool

VOCAB = LLAMA_13B["vocab"]
PAD = "<pad>"

# What the rehearsal changes in configs/tulu-13b.yaml, and why. Everything else is the config as users run it.
REHEARSAL_SETTINGS = {
    "validate.suite": (
        "configs/eval/rehearsal.yaml",
        "every benchmark once (quick's 1,000+ generations at 13B width are hours on 2 cores)",
    ),
    "calibrate.mix": (
        "[{source: wiki, split: calibration, weight: 1}]",
        "Tulu's SFT mixture comes from the Hugging Face Hub, which these machines cannot reach; the offline wiki "
        "text takes its place (the offline chat instructions hold MMLU's dev questions, which validate's 5-shot "
        "prompts use, and the disjointness check refuses them)",
    ),
    "calibrate.num_samples": ("8", "one AutoRound batch; 128 x 2048 tokens are ~166 TFLOP of forward per layer"),
    "calibrate.seq_len": ("512", "with 8 samples: 4,096 calibration tokens per layer"),
    "quantize.autoround_iters": ("2", "200 iterations of forward + backward per layer are hours on 2 cores"),
    "recover.verify_max_ppl": (
        "1000000000",
        "random weights score about the vocabulary size (~32,000); the check still scores and generates",
    ),
}


# ------------------------------------------------------------------------------------------------------ the pair


def sentencepiece_bytes(lines, vocab_size: int) -> bytes:
    """A serialized LLaMA-1-style SentencePiece model (BPE, byte fallback, <unk> 0, <s> 1, </s> 2, no pad) trained on
    `lines` (tests/tiny.py trains its tiny tokenizers with it too)."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return buffer.getvalue()


def train_tokenizer(folder: Path, text: str, vocab: int = VOCAB) -> None:
    """A LLaMA-1-style tokenizer.model trained on `text` (4,000 pieces) and padded with UNUSED pieces to exactly
    `vocab` pieces, so ids, embedding rows and GGUF metadata have 13B sizes."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(sentencepiece_bytes(text.splitlines(), 4000))
    for i in range(len(model.pieces), vocab):
        model.pieces.add(piece=f"<unused{i}>", score=0.0, type=pb.ModelProto.SentencePiece.UNUSED)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())


def tokenizer_text() -> str:
    """English text for the tokenizer: the project's own documentation (always there, offline)."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(line for p in paths for line in p.read_text().splitlines() if line.strip())


def update_config(folder: Path, **values) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2))


def build_pair(root: Path, layers: int) -> tuple[Path, Path]:
    """root/base (LLaMA-1 13B shapes, fp16) and root/diff (Tulu's: float32, + <pad>), `layers` decoder layers."""
    import torch
    from transformers import LlamaTokenizer

    shape = {**LLAMA_13B, "layers": layers}
    base = write_random_model(root / "base", shape, torch.float16, 0.02, seed=1)
    diff = write_random_model(root / "diff", {**shape, "vocab": VOCAB + 1}, torch.float32, 0.0002, seed=2)
    train_tokenizer(base, tokenizer_text())
    tokenizer = LlamaTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(base)
    tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.save_pretrained(diff)
    shutil.copy(base / "tokenizer.model", diff / "tokenizer.model")  # Tulu's diff ships it too (GGUF reads it)
    ids = {"bos_token_id": 1, "eos_token_id": 2}
    update_config(base, **ids, dtype="float16")
    update_config(diff, **ids, pad_token_id=tokenizer.pad_token_id, dtype="float32")
    return base, diff


# ------------------------------------------------------------------------------------------------------ the run


def rehearsal_command(
    base: Path, diff: Path, run_dir: Path, log: Path, stage: str, extra: dict[str, str] | None = None
) -> list[str]:
    """`tulu-quant run` of configs/tulu-13b.yaml with REHEARSAL_SETTINGS, one stage (--only), so each stage's peak RSS
    is its own: in one process the allocator keeps what earlier stages freed, and the next stage's peak includes it."""
    settings = {key: value for key, (value, _) in REHEARSAL_SETTINGS.items()} | (extra or {})
    sets = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    config = ROOT / "configs" / "tulu-13b.yaml"
    paths = ["--base", str(base), "--diff", str(diff), "--run-dir", str(run_dir)]
    return tool("--log-file", str(log), "run", "--config", str(config), *paths, *sets, "--only", stage)


def run_pipeline(base: Path, diff: Path, run_dir: Path, log: Path, extra: dict[str, str] | None = None) -> dict:
    """Every stage of the config in order, each in its own process; the manifest's seconds and peak RSS per stage.
    extra: settings on top of REHEARSAL_SETTINGS (the test's smaller run)."""
    from tulu_quant.config import load_config

    env = dict(os.environ)
    shared = ROOT.parent / "shared" / "data"
    if "TULU_QUANT_DATA" not in env and shared.is_dir():
        env["TULU_QUANT_DATA"] = str(shared)
    start, outputs, code = time.perf_counter(), [], 0
    for stage in load_config(ROOT / "configs" / "tulu-13b.yaml").stages:
        proc = subprocess.run(
            rehearsal_command(base, diff, run_dir, log, stage, extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        outputs.append(proc.stdout)
        if proc.returncode:
            code = proc.returncode
            break
    seconds = time.perf_counter() - start
    manifest = run_dir / "manifest.json"
    stages = json.loads(manifest.read_text())["stages"] if manifest.is_file() else {}
    return {
        "exit_code": code,
        "wall_seconds": round(seconds, 1),
        "output_tail": "".join(outputs)[-3000:],
        "stages": {
            name: {"seconds": e.get("seconds"), "peak_rss_bytes": e.get("peak_rss_bytes"), "status": e.get("status")}
            for name, e in stages.items()
        },
    }


def vllm_load(gptq: Path, log: Path, venv: Path = ROOT / ".venv-vllm") -> dict:
    """Serve the GPTQ checkpoint with vLLM's CPU build and generate a few greedy tokens (or say why it cannot)."""
    from tulu_quant.backends.vllm_backend import serve, vllm_refusal
    from tulu_quant.config import GenerationSettings
    from tulu_quant.hardware import cpu_info
    from tulu_quant.stages.validate import quantization_of

    if not (venv / "bin" / "python").is_file():
        return {"loaded": False, "reason": f"{venv} is missing (make vllm)"}
    reason = vllm_refusal("gptq", quantization_of(gptq), None, cpu_info().flags)
    if reason:
        return {"loaded": False, "reason": reason}
    start = time.perf_counter()
    backend = serve(gptq, "gptq", log, venv, kv_cache_gib=1)
    try:
        ready = time.perf_counter() - start
        prompt = backend.tokenizer("<|user|>\nHello\n<|assistant|>\n").input_ids
        tokens = backend.generate_batch([prompt], GenerationSettings(max_new_tokens=8, temperature=0.0))[0]
    finally:
        backend.close()
    return {"loaded": True, "start_seconds": round(ready, 1), "generated_tokens": len(tokens)}


# ------------------------------------------------------------------------------------------------------ the table


# The suite section of each benchmark the runner names in its log ("reference NAME [k/n] JOB: skipped (...)").
SECTIONS = {
    "MMLU": "mmlu",
    "GSM8K": "gsm",
    "BBH": "bbh",
    "TydiQA": "tydiqa",
    "Codex-Eval": "codex",
    "AlpacaFarm": "alpaca",
}
GPUS = ("RTX 4090 24 GB", "H100 SXM 80 GB")  # the consumer card the 13B config is for, and a datacenter one


def skipped_sections(log_text: str) -> list[str]:
    """Suite sections whose jobs the reference skipped (data not reachable offline): the projection leaves them out."""
    import re

    jobs = re.findall(r"reference \S+ \[\d+/\d+\] (\S+)[^:]*: skipped", log_text)
    return sorted({SECTIONS[job] for job in jobs if job in SECTIONS})


def log_text(out: Path) -> str:
    return (out / "rehearse.log").read_text(errors="replace")


def pair_config(layers: int) -> dict:
    """The pair's config.json as far as plan reads it: LLaMA-1 13B with `layers` decoder layers."""
    from tulu_quant.plan import LLAMA1

    return {**LLAMA1["13B"], "num_hidden_layers": layers}


def projections(base_config: dict, skipped: list[str]) -> dict:
    """plan's stage projection for the rehearsal's shapes and settings (without the benchmarks that were skipped),
    and for 40 layers on this CPU and on GPUS."""
    from tulu_quant.config import load_config, load_suite, parse_assignment
    from tulu_quant.plan import LLAMA1, PROJECTION_GPUS, Shape, gpu_rates, stage_projection

    cfg = load_config(
        ROOT / "configs" / "tulu-13b.yaml",
        dict(parse_assignment(f"{k}={v}") for k, (v, _) in REHEARSAL_SETTINGS.items()),
    )
    suite = load_suite(cfg.validate_.suite)
    ran = suite.model_copy(update={k: getattr(suite, k).model_copy(update={"enabled": False}) for k in skipped})
    configured = load_config(ROOT / "configs" / "tulu-13b.yaml")
    shape = Shape.from_config({**base_config, "vocab_size": VOCAB + 1})
    full = Shape.from_config(LLAMA1["13B"])
    gpus = {gpu.name: gpu for gpu in PROJECTION_GPUS}
    return {
        "skipped": skipped,
        "rehearsal": stage_projection(shape, cfg, suite=ran),
        "layers_40_cpu": stage_projection(full, cfg),
        "layers_40_cpu_as_configured": stage_projection(full, configured),
        **{
            f"layers_40_{name}_as_configured": stage_projection(full, configured, gpu_rates(gpus[name]))
            for name in GPUS
        },
    }


def within(measured: float, projected: float, tolerance: float = 0.25) -> bool:
    return projected > 0 and abs(measured - projected) / projected <= tolerance


def markdown(result: dict) -> str:
    from tulu_quant.progress import human_bytes, human_seconds

    run, plan = result["run"], result["projection"]["rehearsal"]
    rows = []
    for name, e in run["stages"].items():
        p = plan.get(name, {})
        ratio_t = e["seconds"] / p["seconds"] if p.get("seconds") else float("nan")
        ratio_m = e["peak_rss_bytes"] / p["rss_bytes"] if p.get("rss_bytes") else float("nan")
        rows.append(
            f"| {name} | {human_seconds(e['seconds'])} | {human_seconds(p.get('seconds', 0))} | {ratio_t:.2f} "
            f"| {human_bytes(e['peak_rss_bytes'])} | {human_bytes(p.get('rss_bytes', 0))} | {ratio_m:.2f} |"
        )
    full = result["projection"]["layers_40_cpu"]
    configured = result["projection"]["layers_40_cpu_as_configured"]
    gpus = [result["projection"][f"layers_40_{name}_as_configured"] for name in GPUS]
    rows40 = "\n".join(
        f"| {name} | {human_seconds(full[name]['seconds'])} | {human_bytes(full[name]['rss_bytes'])} "
        f"| {human_seconds(configured[name]['seconds'])} | "
        + " | ".join(human_seconds(gpu[name]["seconds"]) for gpu in gpus)
        + " |"
        for name in full
    )
    skipped = result["projection"].get("skipped") or []
    left_out = (
        f" The projection leaves out what the run skipped (its data is not reachable offline): {', '.join(skipped)}."
        if skipped
        else ""
    )
    gpu_columns = " | ".join(f"as configured, {name}" for name in GPUS)
    settings = "\n".join(f"- `--set {k}={v}`: {why}." for k, (v, why) in REHEARSAL_SETTINGS.items())
    vllm = result["vllm"]
    served = (
        f"vLLM (CPU build) loaded the GPTQ checkpoint in {vllm['start_seconds']} s and generated "
        f"{vllm['generated_tokens']} greedy tokens."
        if vllm.get("loaded")
        else f"vLLM did not load the GPTQ checkpoint: {vllm.get('reason')}."
    )
    return f"""## The 13B path rehearsed at real shapes (`make rehearse`)

Command: `make rehearse` (`python -m benchmarks.rehearse --out bench-out --layers {result["layers"]}`), each stage
in its own process (`tulu-quant run ... --only STAGE`, so a stage's peak RSS is its own).
Machine: {result["machine"]}; load average {result["load_average_before"]} before.
A random LLaMA-1-13B-shaped pair ({result["layers"]} decoder layers at 13B width: hidden 5120, 40 heads, intermediate
13824; vocabulary 32000 -> 32001) written in {result["build_seconds"]} s, then
`tulu-quant run --config configs/tulu-13b.yaml` with only these changes:

{settings}

Exit code {run["exit_code"]}, wall time {human_seconds(run["wall_seconds"])}. {served}
Measured per stage (the run's manifest) next to `tulu_quant.plan.stage_projection` for the same shapes and settings
(ratio = measured / projected).{left_out} Where plan's first rates (from the stand-in, 576 wide) were more than
25 % off at these widths, they were corrected from this run; the comments of `tulu_quant/plan.py` ("stage time") say
which and from what.

| stage | wall time | plan | ratio | peak RSS | plan | ratio |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Projected for the real 40 layers: on this CPU with the rehearsal's settings, then with configs/tulu-13b.yaml as it is
(128 x 2048 calibration tokens, 200 AutoRound iterations, the quick suite) on this CPU and on two GPUs
(`tulu_quant.plan.gpu_rates`: the card's compute and bandwidth at plan's efficiencies; recovery, conversion and hashing
on this host). This is why the 13B config is meant for a GPU:

| stage | 40 layers, rehearsal settings | peak RSS | as configured, this CPU | {gpu_columns} |
| --- | --- | --- | --- | --- | --- |
{rows40}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the pair and the run directory")
    parser.add_argument(
        "--table-only", action="store_true", help="re-project and rewrite the table from OUT/rehearse.json and its log"
    )
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        result = json.loads((out / "rehearse.json").read_text())
        skipped = skipped_sections(log_text(out))
        result["projection"] = projections(pair_config(result["layers"]), skipped)
        (out / "rehearse.json").write_text(json.dumps(result, indent=2))
        (out / "rehearse.md").write_text(markdown(result))
        print(out / "rehearse.md")
        return 0
    work = out / "rehearse-work"
    shutil.rmtree(work, ignore_errors=True)
    before = shown(load_average())
    start = time.perf_counter()
    base, diff = build_pair(work, args.layers)
    build_seconds = round(time.perf_counter() - start, 1)
    run = run_pipeline(base, diff, work / "run", out / "rehearse.log")
    gptq = work / "run" / "gptq"
    vllm = (
        vllm_load(gptq, out / "rehearse-vllm.log")
        if gptq.is_dir()
        else {"loaded": False, "reason": "no GPTQ checkpoint"}
    )
    result = {
        "machine": machine(),
        "layers": args.layers,
        "build_seconds": build_seconds,
        "load_average_before": before,
        "run": run,
        "vllm": vllm,
    }
    result["projection"] = projections(json.loads((base / "config.json").read_text()), skipped_sections(log_text(out)))
    (out / "rehearse.json").write_text(json.dumps(result, indent=2))
    (out / "rehearse.md").write_text(markdown(result))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(out / "rehearse.md")
    return 0 if run["exit_code"] == 0 and vllm.get("loaded") else 1


if __name__ == "__main__":
    sys.exit(main())
