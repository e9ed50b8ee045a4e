"""Benchmarks: `python -m benchmarks.bench recover|docs|all --out DIR` (what `make bench-recover` / `make bench` run).

Each benchmark writes DIR/NAME.json (every figure) and DIR/NAME.md (a Markdown section); `docs` assembles the sections
into docs/benchmarks.md with the machine they ran on. Comparisons are made side by side in one run and given as ratios.

pipeline: `tulu-quant run` on configs/standin.yaml from an empty run directory (what `make quantize` does after
installing), stage by stage from its manifest, with the summary's artifact table.
quantize: python -m benchmarks.bench_quant (wiki perplexity of fp16, RTN and GPTQ settings side by side).
validate: the `quick` suite on the pipeline run's fp16 model and GPTQ checkpoint, with the time each took.
onnx: python -m benchmarks.bench_onnx (decode speed, time to first token and perplexity of every CPU path).
suitebatch: the `standin` suite (--suite) at batch_size 1 (how validation ran before batching) and at auto, side by
side per benchmark, with the metrics that differ (greedy ones must not).
engine: the `standin` suite (--suite) with --engine native and with --engine vllm, side by side per benchmark.
batch: python -m benchmarks.bench_batch (generation and scoring tokens/s at batch 1, 4, 16, 32 for each backend).
gguf: python -m benchmarks.bench_gguf (GGUF types with and without our importance matrix against GPTQ and int4 ONNX:
perplexity, KL, bits per weight; decode speed of llama.cpp, onnxruntime-genai and torch; export time and memory).

recover: a ~1B-parameter random LLaMA pair on disk (fp16 base, float32 diff with one added vocabulary row, both
sharded), recovered by `tulu-quant recover` and by the naive full-load algorithm (open-instruct's: both state dicts in
float32 in memory), each in its own process so peak RSS (wait4's ru_maxrss) is that process's alone.
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

from tulu_quant.checkpoint import SafetensorsWriter, open_checkpoint, plan_shards, shard_names, write_index

from .common import ROOT, load_average, machine, shown, tool

# The sections of docs/benchmarks.md, in order; `make bench` runs them all.
SECTIONS = ("recover", "pipeline", "dtype", "quantize", "validate", "suitebatch", "engine", "batch", "onnx", "gguf")

# LLaMA-1 shapes (layers, hidden, intermediate, vocab); Tulu adds one <pad> row.
LLAMA_13B = dict(layers=40, hidden=5120, intermediate=13824, vocab=32000)
BENCH_1B = dict(layers=20, hidden=2048, intermediate=5504, vocab=32000)


def llama_entries(layers: int, hidden: int, intermediate: int, vocab: int, dtype) -> list[tuple]:
    entries = [("model.embed_tokens.weight", dtype, (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        entries += [(p + f"self_attn.{m}_proj.weight", dtype, (hidden, hidden)) for m in "qkvo"]
        entries += [
            (p + "mlp.gate_proj.weight", dtype, (intermediate, hidden)),
            (p + "mlp.up_proj.weight", dtype, (intermediate, hidden)),
            (p + "mlp.down_proj.weight", dtype, (hidden, intermediate)),
            (p + "input_layernorm.weight", dtype, (hidden,)),
            (p + "post_attention_layernorm.weight", dtype, (hidden,)),
        ]
    return entries + [("model.norm.weight", dtype, (hidden,)), ("lm_head.weight", dtype, (vocab, hidden))]


def n_params(shape: dict) -> int:
    import torch

    return sum(_numel(s) for _, _, s in llama_entries(**shape, dtype=torch.float16))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_random_model(root: Path, shape: dict, dtype, scale: float, seed: int, shard_bytes: int = 2 * 10**9) -> Path:
    """A random LLaMA checkpoint written tensor by tensor (never the whole model in memory), with config.json."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    entries = llama_entries(**shape, dtype=dtype)
    shards = plan_shards(entries, shard_bytes)
    names = shard_names(len(shards))
    g = torch.Generator().manual_seed(seed)
    for shard, fname in zip(shards, names):
        writer = SafetensorsWriter(root / fname, shard)
        for name, _, dims in shard:
            writer.write(name, (torch.randn(dims, generator=g) * scale).to(dtype))
        writer.close()
    write_index(root, shards, names)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape["hidden"],
        "intermediate_size": shape["intermediate"],
        "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["hidden"] // 128,
        "num_key_value_heads": shape["hidden"] // 128,
        "vocab_size": shape["vocab"],
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


def write_random_pair(root: Path, shape: dict, shard_bytes: int = 2 * 10**9) -> tuple[Path, Path]:
    import torch

    base = write_random_model(root / "base", shape, torch.float16, 0.02, seed=1, shard_bytes=shard_bytes)
    diff = write_random_model(
        root / "diff", {**shape, "vocab": shape["vocab"] + 1}, torch.float32, 0.0002, seed=2, shard_bytes=shard_bytes
    )
    return base, diff


def naive_recover(base_dir: Path, diff_dir: Path, out: Path) -> None:
    """The full-load algorithm (open-instruct weight_diff.py recover): both models in float32, then one save."""
    import torch
    from safetensors.torch import load_file, save_file

    def load(root: Path) -> dict:
        state = {}
        for f in open_checkpoint(root).files():
            state.update({k: v.float() for k, v in load_file(f).items()})
        return state

    base, diff = load(base_dir), load(diff_dir)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        n_new = diff[key].shape[0] - base[key].shape[0]
        if n_new > 0:
            base[key] = torch.cat([base[key], base[key].mean(dim=0, keepdim=True).expand(n_new, -1)])
    for key in base:
        base[key].add_(diff[key])
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() for k, v in base.items()}, out / "model.safetensors")


def timed(cmd: list[str]) -> dict:
    """Run a command; its wall time and peak RSS (that process alone, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_bytes": usage.ru_maxrss * 1024}


def recover_command(base: Path, diff: Path, out: Path, log: Path) -> list[str]:
    """`tulu-quant recover` of a pair to fp16, quiet, its log in `log` (what the benchmark and the memory test run)."""
    paths = ["--base", str(base), "--diff", str(diff), "--out", str(out)]
    return tool("-q", "--log-file", str(log), "recover", *paths, "--dtype", "float16")


def bench_recover(out: Path, shape: dict = BENCH_1B) -> dict:
    import torch
    from safetensors import safe_open

    work = out / "recover-work"
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    base, diff = write_random_pair(work, shape)
    gen_seconds = time.perf_counter() - start
    ours = timed(recover_command(base, diff, work / "ours", work / "log"))
    naive = timed([sys.executable, "-m", "benchmarks.bench", "_naive", str(base), str(diff), str(work / "naive")])
    # Same weights from both: compare every tensor.
    mine = open_checkpoint(work / "ours")
    with mine.reader() as get, safe_open(work / "naive" / "model.safetensors", "pt") as ref:
        identical = all(torch.equal(get(k), ref.get_tensor(k)) for k in mine.tensors)
    params = n_params(shape)
    input_bytes = sum(f.stat().st_size for d in (base, diff) for f in open_checkpoint(d).files())
    scale = n_params(LLAMA_13B) / params
    largest = max(_numel(s) for _, _, s in llama_entries(**shape, dtype=torch.float32)) * 4
    largest_13b = (LLAMA_13B["vocab"] + 1) * LLAMA_13B["hidden"] * 4
    result = {
        "machine": machine(),
        "params": params,
        "input_bytes": input_bytes,
        "generate_seconds": round(gen_seconds, 1),
        "tulu_quant": ours,
        "naive": naive,
        "identical_output": identical,
        "ratios": {
            "time_naive_over_ours": round(naive["seconds"] / ours["seconds"], 2),
            "rss_naive_over_ours": round(naive["peak_rss_bytes"] / ours["peak_rss_bytes"], 2),
        },
        "extrapolation_13b": {
            "params": n_params(LLAMA_13B),
            "naive_peak_rss_gb": round(naive["peak_rss_bytes"] * scale / 1e9, 1),
            # Ours holds a few copies of the largest tensor (+ the interpreter): scale only that part.
            "ours_peak_rss_gb": round((ours["peak_rss_bytes"] + (largest_13b - largest) * 4) / 1e9, 1),
            "ours_seconds": round(ours["seconds"] * scale),
            "naive_seconds": round(naive["seconds"] * scale),
        },
    }
    (out / "recover.json").write_text(json.dumps(result, indent=2))
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    ex = result["extrapolation_13b"]
    md = f"""## Streaming recovery vs the full-load algorithm

Command: `make bench-recover` (`python -m benchmarks.bench recover --out bench-out`). Machine: {result["machine"]}.
Input: a random LLaMA pair of {params / 1e9:.2f} B parameters ({shape["layers"]} layers, hidden {shape["hidden"]},
intermediate {shape["intermediate"]}, vocabulary {shape["vocab"]} + 1 added row):
fp16 base + float32 diff, {gb(input_bytes)} on disk,
sharded. Output fp16. Both outputs compared tensor by tensor: {"identical" if identical else "DIFFERENT"}. Both read
files the page cache holds (they were just written). `tulu-quant recover` also checks every tensor (finite values, the
diff-to-base norm ratio), which the naive algorithm does not.

| method | wall time | peak RSS |
| --- | --- | --- |
| `tulu-quant recover` (streaming) | {ours["seconds"]} s | {gb(ours["peak_rss_bytes"])} |
| naive full load (open-instruct's algorithm) | {naive["seconds"]} s | {gb(naive["peak_rss_bytes"])} |
| ratio naive / ours | {result["ratios"]["time_naive_over_ours"]}x | {result["ratios"]["rss_naive_over_ours"]}x |

Extrapolated to LLaMA-1 13B ({ex["params"] / 1e9:.1f} B parameters, x{scale:.1f}): the naive algorithm needs about
{ex["naive_peak_rss_gb"]} GB of RAM (open-instruct's own script, with transformers model objects, about 104 GB);
`tulu-quant recover` about {ex["ours_peak_rss_gb"]} GB (its peak is a few copies of the largest tensor, the 32001 x 5120
embedding in float32, plus the interpreter). Time scales with bytes read and written: about {ex["ours_seconds"] // 60}
min on this machine's disk, against {ex["naive_seconds"] // 60} min for the naive one (if it had the memory).
"""
    (out / "recover.md").write_text(md)
    shutil.rmtree(work, ignore_errors=True)
    return result


def bench_pipeline(out: Path, config: Path = ROOT / "configs" / "standin.yaml") -> dict:
    from tulu_quant.config import load_config

    run_dir = out / "pipeline-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    before = shown(load_average())
    start = time.perf_counter()
    proc = subprocess.run(
        tool("--log-file", str(out / "pipeline.log"), "run", "--config", str(config), "--run-dir", str(run_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds = time.perf_counter() - start
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    stages = {
        name: {"seconds": e["seconds"], "peak_rss_bytes": e["peak_rss_bytes"], "summary": e.get("summary", {})}
        for name, e in manifest.items()
    }
    summary = proc.stdout[proc.stdout.rfind("artifact ") :] if "artifact " in proc.stdout else ""
    result = {
        "machine": machine(),
        "config": str(config.relative_to(ROOT)),
        "exit_code": proc.returncode,
        "wall_seconds": round(seconds, 1),
        "stages": stages,
        "load_average_before": before,
        "load_average_after": shown(load_average()),
        "model": load_config(config).model.name,
    }
    (out / "pipeline.json").write_text(json.dumps(result, indent=2))
    from tulu_quant.progress import human_bytes, human_seconds

    rows = "\n".join(
        f"| {name} | {human_seconds(e['seconds'])} | {human_bytes(e['peak_rss_bytes'])} |" for name, e in stages.items()
    )
    md = f"""## The stand-in pipeline (`make quantize`), stage by stage

Command: `python -m benchmarks.bench pipeline`
(`tulu-quant run --config {result["config"]}` into an empty run directory;
the stand-in's GGUF conversion cached, as after a first run). Machine: {result["machine"]}; load average (1/5/15 min)
{before} before, {result["load_average_after"]} after. Exit code {proc.returncode}; wall time
{human_seconds(seconds)}, plus about a minute for `make install` on a machine with pip's cache warm.

| stage | wall time | peak RSS |
| --- | --- | --- |
{rows}

The run's summary:

```
{summary.strip()}
```
"""
    (out / "pipeline.md").write_text(md)
    return result


def bench_module(out: Path, name: str, module: str, title: str, *extra: str) -> None:
    """Run a benchmark module writing its own Markdown table into out/name/, and wrap it as a section."""
    folder = out / name
    subprocess.run([sys.executable, "-m", module, "--out", str(folder), *extra], check=True)
    table = next((folder / f).read_text() for f in ("results.md", "bench.md") if (folder / f).is_file())
    (out / f"{name}.md").write_text(f"## {title}\n\n{table}")


def report_name(suite: str, engine: str = "native", batch_size: int | str | None = None) -> str:
    """validate-SUITE[-ENGINE][-batchN]: the report folder (and, with .log, the log) of one benchmark command."""
    return (
        f"validate-{suite}"
        + ("" if engine == "native" else f"-{engine}")
        + ("" if batch_size is None else f"-batch{batch_size}")
    )


def suite_with_batch(out: Path, suite: str, batch_size: int | str) -> Path:
    """A copy of configs/eval/SUITE.yaml with batch_size replaced, in out (validate --suite takes a YAML path)."""
    from tulu_quant.config import CONFIGS_DIR, read_yaml

    data = read_yaml(CONFIGS_DIR / "eval" / f"{suite}.yaml")
    path = out / f"suite-{suite}-batch{batch_size}.yaml"
    path.write_text(json.dumps({**data, "batch_size": batch_size}, indent=2))  # JSON is YAML
    return path


def run_validate(
    out: Path,
    run_dir: Path,
    suite: str,
    artifacts: tuple[str, ...],
    engine: str = "native",
    batch_size: int | str | None = None,
):
    """`tulu-quant validate` of the run's fp16 model against its artifacts into out/report_name(...), with the suite's
    batch_size replaced when batch_size is given; returns (exit code, report.json, the (name, entry) pairs, seconds per
    artifact)."""
    report = out / report_name(suite, engine, batch_size)
    shutil.rmtree(report, ignore_errors=True)
    shutil.rmtree(report.parent / f".{report.name}.work", ignore_errors=True)  # measure, do not reuse
    suite_arg = suite if batch_size is None else str(suite_with_batch(out, suite, batch_size))
    proc = subprocess.run(
        tool(
            "--log-file",
            str(out / f"{report.name}.log"),
            "validate",
            "--engine",
            engine,
            "--reference",
            str(run_dir / "recovered"),
            *[arg for name in artifacts if (run_dir / name).is_dir() for arg in ("--candidate", str(run_dir / name))],
            "--suite",
            suite_arg,
            "--report",
            str(report),
            "--config",
            str(ROOT / "configs" / "standin.yaml"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    data = json.loads((report / "report.json").read_text())
    scored = [("fp16", data["reference"]), *zip([a for a in artifacts if (run_dir / a).is_dir()], data["candidates"])]
    seconds = {name: round(sum(t["seconds"] for t in a["timings"].values()), 1) for name, a in scored}
    return proc, report, data, scored, seconds


def bench_validate(
    out: Path, run_dir: Path, suite: str = "quick", artifacts: tuple[str, ...] = ("gptq", "onnx")
) -> dict:
    """The suite on the run's fp16 model (reference), GPTQ checkpoint and ONNX export (when the run has one), timed job
    by job from report.json."""
    before = shown(load_average())
    proc, report, data, scored, seconds = run_validate(out, run_dir, suite, artifacts)
    result = {
        "machine": machine(),
        "suite": suite,
        "exit_code": proc.returncode,
        "seconds": seconds,
        "load_average_before": before,
        "load_average_after": shown(load_average()),
    }
    (out / "validate.json").write_text(json.dumps(result, indent=2))
    tables = (report / "report.md").read_text().split("\n", 2)[2]  # drop the report's own title
    onnx = f", int4 ONNX (onnxruntime-genai) {seconds['onnx']:.0f} s" if "onnx" in seconds else ""
    candidates = " ".join(f"--candidate RUN/{a}" for a, _ in scored[1:])
    md = f"""## Validation: the `{suite}` suite on the stand-in: fp16 and {", ".join(a for a, _ in scored[1:])}

Command: `tulu-quant validate --config configs/standin.yaml --suite {suite} --reference RUN/recovered {candidates}`
(what `python -m benchmarks.bench validate` runs on a `make quantize` run; gates: the stand-in config's).
Machine: {result["machine"]}; load average {before} before, {result["load_average_after"]} after.
Time spent scoring: fp16 {seconds["fp16"]:.0f} s, GPTQ (transformers, GPTQModel's CPU kernel)
{seconds["gptq"]:.0f} s{onnx}. Benchmarks whose data is not reachable offline are listed as skipped.

{tables.strip()}
"""
    (out / "validate.md").write_text(md.replace("\n# ", "\n### ").replace("\n## ", "\n### "))
    return result


def log_wall_seconds(log: Path) -> float | None:
    """Seconds from a tulu-quant log's first timestamped line to its last: a command's wall time, model loads and
    server starts included."""
    import datetime

    stamps = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        try:
            stamps.append(datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
        except ValueError:
            continue
    return round((stamps[-1] - stamps[0]).total_seconds(), 1) if len(stamps) > 1 else None


def bench_engines(out: Path, run_dir: Path, suite: str = "standin", artifacts: tuple[str, ...] = ("gptq", "onnx")):
    """The suite once on the native backends and once with --engine vllm, side by side: seconds per benchmark and
    artifact, the ratio, the wall time of each command, and whether the two engines agree (perplexity, answers)."""
    machine_line, before = machine(), shown(load_average())
    for engine in ("native", "vllm"):
        (out / f"{report_name(suite, engine)}.log").unlink(missing_ok=True)
    runs = {engine: run_validate(out, run_dir, suite, artifacts, engine) for engine in ("native", "vllm")}
    after = shown(load_average())
    rows, agreement = [], []
    native, served = runs["native"], runs["vllm"]
    for (name, a), (_, b) in zip(native[3], served[3]):
        for job, t in a["timings"].items():
            u = b["timings"][job]
            if t["skipped"] or u["skipped"]:
                continue
            ratio = t["seconds"] / u["seconds"] if u["seconds"] else float("nan")
            rows.append([name, job, u["engine"], t["seconds"], u["seconds"], round(ratio, 2)])
        for key in ("ppl.wiki", "ppl.shakespeare"):
            x, y = a["metrics"].get(key, {}).get("value"), b["metrics"].get(key, {}).get("value")
            if x and y:
                agreement.append(f"{name} {key}: {x:.4f} native, {y:.4f} vLLM ({(y / x - 1) * 100:+.3f} %)")
    result = {
        "machine": machine_line,
        "suite": suite,
        "artifacts": list(artifacts),
        "load_average_before": before,
        "load_average_after": after,
        "exit_codes": {e: r[0].returncode for e, r in runs.items()},
        "seconds": {e: r[4] for e, r in runs.items()},
        "rows": rows,
        "agreement": agreement,
        "engines": {name: entry["info"].get("engine") for name, entry in served[3]},
    }
    (out / "engine.json").write_text(json.dumps(result, indent=2))
    engine_markdown(out)
    return result


def engine_markdown(out: Path) -> Path:
    """out/engine.md from out/engine.json and the two commands' logs (their wall time)."""
    result = json.loads((out / "engine.json").read_text())
    suite = result["suite"]
    walls = {e: log_wall_seconds(out / f"{report_name(suite, e)}.log") for e in ("native", "vllm")}
    table = ["| artifact | benchmark | ran on (engine vllm) | native s | vllm s | native / vllm |", "| --- " * 6 + "|"]
    table += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.2f}x |" for r in result["rows"]]
    seconds = result["seconds"]
    totals = "; ".join(
        f"{name}: native {seconds['native'][name]:.0f} s, vllm {seconds['vllm'][name]:.0f} s "
        f"({seconds['native'][name] / max(seconds['vllm'][name], 1e-9):.2f}x)"
        for name in seconds["native"]
    )
    wall = (
        f"native {walls['native']:.0f} s, vllm {walls['vllm']:.0f} s ({walls['native'] / walls['vllm']:.2f}x)"
        if all(walls.values())
        else "not recorded"
    )
    where = "; ".join(f"{k}: {v}" for k, v in result["engines"].items())
    candidates = " ".join(f"--candidate RUN/{a}" for a in result.get("artifacts", ["gptq", "onnx"]))
    md = f"""## Validation engines: native backends vs vLLM (CPU build), the `{suite}` suite

Command: `python -m benchmarks.bench engine` = `tulu-quant validate --suite {suite} --engine native|vllm --reference
RUN/recovered {candidates}`, one after the other from empty caches. Machine: {result["machine"]}; load average
{result["load_average_before"]} before, {result["load_average_after"]} after. With engine vllm, KL divergence and MMLU
stay native (they need full logits) and an artifact vLLM does not load runs native ({where}).

Scoring time (the benchmarks' own seconds, model loads and server starts excluded): {totals}.
Wall time of each whole command (loads, vLLM server starts, report): {wall}.

Agreement: {"; ".join(result["agreement"]) or "no perplexity in the suite"}.

{chr(10).join(table)}
"""
    (out / "engine.md").write_text(md)
    return out / "engine.md"


def bench_suite_batch(
    out: Path, run_dir: Path, suite: str = "standin", artifacts: tuple[str, ...] = ("gptq", "onnx"), batch: int = 1
):
    """The suite on the native backends at batch_size BATCH (one sequence at a time: how validation ran before
    batching) and at the suite's auto batching, side by side: seconds per benchmark and artifact, the ratio, each whole
    command's wall time, and which metrics differ (greedy ones must not; Codex's sampled ones are seeded per batch)."""
    machine_line, before = machine(), shown(load_average())
    sizes = (batch, "auto")
    for size in sizes:
        (out / f"{report_name(suite, batch_size=size)}.log").unlink(missing_ok=True)
    runs = {size: run_validate(out, run_dir, suite, artifacts, batch_size=size) for size in sizes}
    rows, differ = [], []
    for (name, a), (_, b) in zip(runs[batch][3], runs["auto"][3]):
        for job, t in a["timings"].items():
            u = b["timings"][job]
            if not (t["skipped"] or u["skipped"]):
                rows.append([name, job, t["seconds"], u["seconds"], round(t["seconds"] / max(u["seconds"], 1e-9), 2)])
        for key, m in a["metrics"].items():
            x, y = m.get("value"), b["metrics"].get(key, {}).get("value")
            if x != y:
                differ.append(f"{name} {key}: {x} at batch {batch}, {y} at auto")
    result = {
        "machine": machine_line,
        "suite": suite,
        "artifacts": list(artifacts),
        "batch": batch,
        "load_average_before": before,
        "load_average_after": shown(load_average()),
        "exit_codes": {str(size): r[0].returncode for size, r in runs.items()},
        "seconds": {str(size): r[4] for size, r in runs.items()},
        "walls": {str(size): log_wall_seconds(out / f"{report_name(suite, batch_size=size)}.log") for size in sizes},
        "rows": rows,
        "differ": differ,
    }
    (out / "suitebatch.json").write_text(json.dumps(result, indent=2))
    suite_batch_markdown(out)
    return result


def suite_batch_markdown(out: Path) -> Path:
    """out/suitebatch.md from out/suitebatch.json."""
    result = json.loads((out / "suitebatch.json").read_text())
    suite, batch, seconds, walls = result["suite"], result["batch"], result["seconds"], result["walls"]
    one, auto = str(batch), "auto"
    table = [f"| artifact | benchmark | batch {batch} s | auto s | batch {batch} / auto |", "| --- " * 5 + "|"]
    table += [f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f}x |" for r in result["rows"]]
    totals = "; ".join(
        f"{name}: {seconds[one][name]:.0f} s vs {seconds[auto][name]:.0f} s "
        f"({seconds[one][name] / max(seconds[auto][name], 1e-9):.2f}x)"
        for name in seconds[one]
    )
    wall = (
        f"batch {batch} {walls[one]:.0f} s, auto {walls[auto]:.0f} s ({walls[one] / walls[auto]:.2f}x)"
        if walls[one] and walls[auto]
        else "not recorded"
    )
    candidates = " ".join(f"--candidate RUN/{a}" for a in result["artifacts"])
    differ = "; ".join(result["differ"]) or "none: every metric is identical"
    md = f"""## Validation before and after batching: the `{suite}` suite at batch {batch} and at auto

Command: `python -m benchmarks.bench suitebatch` = `tulu-quant validate --suite SUITE.yaml --reference RUN/recovered
{candidates}` with the suite's `batch_size: {batch}` (one sequence at a time, as validation ran before it was batched)
and `batch_size: auto`, one after the other from empty caches, native backends. Machine: {result["machine"]}; load
average {result["load_average_before"]} before, {result["load_average_after"]} after.

Scoring time (the benchmarks' own seconds, model loads excluded), batch {batch} vs auto: {totals}.
Wall time of each whole command (loads and report included): {wall}.

Metrics that differ between the two runs: {differ}.

{chr(10).join(table)}
"""
    (out / "suitebatch.md").write_text(md)
    return out / "suitebatch.md"


def assemble_docs(out: Path, doc: Path = ROOT / "docs" / "benchmarks.md") -> Path:
    """docs/benchmarks.md from every section the benchmarks wrote into `out` (others keep their previous text)."""
    order = list(SECTIONS)
    sections = {p.stem: p.read_text() for p in Path(out).glob("*.md")}
    previous = _split_sections(doc.read_text()) if doc.is_file() else {}
    parts = [
        "# Benchmarks\n\nGenerated by `make bench` (each section by its own target; a section not re-run keeps its "
        "previous figures). Every figure was measured on the machine named in its section.\n"
    ]
    for name in order + sorted(set(sections) - set(order)):
        text = sections.get(name) or previous.get(name)
        if text:
            parts.append(f"<!-- section: {name} -->\n{text.strip()}\n")
    doc.write_text("\n".join(parts))
    return doc


def _split_sections(text: str) -> dict[str, str]:
    out = {}
    for chunk in text.split("<!-- section: ")[1:]:
        name, _, body = chunk.partition(" -->\n")
        out[name] = body
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench")
    parser.add_argument("what", choices=[*SECTIONS, "docs", "all", "_naive"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument(
        "--artifacts", nargs="+", default=["gptq", "onnx"], help="validate/engine: the run's candidate folders scored"
    )
    parser.add_argument("--suite", default="standin", help="engine/suitebatch: the suite run both ways")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="validate/onnx: a finished stand-in run (default: the pipeline benchmark's run in OUT, else runs/standin)",
    )
    args = parser.parse_args(argv)
    if args.what == "_naive":
        naive_recover(*map(Path, args.args))
        return 0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = list(SECTIONS) if args.what == "all" else [args.what]
    for what in todo:
        run_dir = args.run_dir or next(
            (d for d in (out / "pipeline-run", ROOT / "runs" / "standin") if (d / "manifest.json").is_file()),
            out / "pipeline-run",
        )
        if what == "recover":
            bench_recover(out)
        elif what == "pipeline":
            bench_pipeline(out)
        elif what == "quantize":
            bench_module(out, "quantize", "benchmarks.bench_quant", "Quantization quality on the stand-in")
        elif what == "validate":
            bench_validate(out, run_dir, artifacts=tuple(args.artifacts))
        elif what == "suitebatch":
            bench_suite_batch(out, run_dir, args.suite, artifacts=tuple(args.artifacts))
        elif what == "engine":
            bench_engines(out, run_dir, args.suite, artifacts=tuple(args.artifacts))
        elif what == "batch":
            bench_module(
                out,
                "batch",
                "benchmarks.bench_batch",
                "Batched scoring and generation: tokens/s by batch size",
                "--run-dir",
                str(run_dir),
                "--vllm",
            )
        elif what == "dtype":
            bench_module(out, "dtype", "benchmarks.bench_dtype", "Quantize seconds per layer by compute dtype")
        elif what == "gguf":
            bench_module(
                out,
                "gguf",
                "benchmarks.bench_gguf",
                "GGUF (llama.cpp) on the stand-in: quality, speed, export",
                "--run-dir",
                str(run_dir),
            )
        elif what == "onnx":
            bench_module(
                out,
                "onnx",
                "benchmarks.bench_onnx",
                "CPU inference paths on the stand-in: speed and perplexity",
                "--run-dir",
                str(run_dir),
            )
    print(f"wrote {assemble_docs(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
