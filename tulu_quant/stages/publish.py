"""Publish: a Hub-ready folder (weights, tokenizer with chat template, model card, SHA256SUMS) and its upload.

The model card carries only numbers measured in this run (read from the validation report); a metric that was not
measured says so and why. `--push` uploads with huggingface_hub's upload_folder, one branch per variant as GPTQ
publishers do; without it a dry run lists what would be uploaded. An upload either finishes (and its commit URL is
recorded) or fails with one clear sentence: nothing is ever claimed uploaded that was not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_dir, sha256_file
from ..config import ModelConfig, PublishConfig, RunConfig
from ..errors import UserError
from ..eval.report import protocol_lines
from ..progress import NULL, Progress, human_bytes
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

STAGE = Stage("publish", output="publish", requires=(("huggingface_hub", "pip install huggingface_hub"),))

SKIP_FILES = {"recovery.json", "export.json"}  # our own records stay in the run dir, not in the published repo


class PublishError(UserError, RuntimeError):
    """Nothing to publish from, or an upload that failed (nothing is ever claimed uploaded that was not)."""


@dataclass
class PublishResult:
    out: Path
    files: dict[str, int]  # relative path -> bytes
    repo_id: str | None
    revision: str | None
    pushed: bool
    commit_url: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def summary(self) -> str:
        listing = [f"  {size:10d}  {rel}" for rel, size in sorted(self.files.items())]
        done = f"uploaded: {self.commit_url}" if self.pushed else "dry run, nothing uploaded"
        return "\n".join([*listing, f"{self.out}: {len(self.files)} files; {done}"])


# ------------------------------------------------------------------------------------------------------ pure helpers


def read_report(report_dir: Path | None, model_dir: Path) -> tuple[dict | None, dict | None]:
    """(the whole report, the candidate entry for model_dir) from report.json; (None, None) without a report."""
    if report_dir is None:
        return None, None
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        raise PublishError(f"{path}: no validation report there; run `tulu-quant validate` first or omit --report.")
    report = json.loads(path.read_text())
    wanted = Path(model_dir).resolve()
    for cand in report.get("candidates", []):
        if Path(cand["path"]).resolve() == wanted:
            return report, cand
    names = [c["path"] for c in report.get("candidates", [])]
    raise PublishError(f"{path} has no results for {model_dir} (it covers {names}); validate this model first.")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.{ {'points': 1, 'ppl': 3, 'nats': 4, 'ratio': 4}.get(unit, 3) }f}"


def validation_table(report: dict, cand: dict) -> str:
    """Markdown rows: metric, reference, this model, delta (95% CI), within noise, gate. Measured values only."""
    ref = report["reference"]["metrics"]
    gates = {}
    for gate in cand.get("gates", []):
        gates.setdefault(gate["metric"], []).append(gate["status"])
    rows = ["| metric | fp16 reference | this model | delta [95% CI] | gate |", "| --- | --- | --- | --- | --- |"]
    skipped = []
    for key, metric in cand["metrics"].items():
        if metric.get("skipped"):
            skipped.append(f"- {metric['label']}: not measured ({metric['skipped']})")
            continue
        delta = cand.get("deltas", {}).get(key)
        if delta:
            pct = f" ({delta['delta_pct']:+.2f} %)" if delta.get("delta_pct") is not None else ""
            delta_text = f"{delta['delta']:+.3g}{pct} [{delta['ci'][0]:+.3g}, {delta['ci'][1]:+.3g}] {delta['ci_unit']}"
            delta_text += ", within noise" if delta["within_noise"] else ""
        else:
            delta_text = "-"
        unit = metric["unit"]
        ref_value = ref.get(key, {}).get("value")
        rows.append(
            f"| {metric['label']} | {_fmt(ref_value, unit)} | {_fmt(metric['value'], unit)} | {delta_text} | "
            f"{', '.join(gates.get(key, [])) or '-'} |"
        )
    return "\n".join(rows + ([""] + skipped if skipped else []))


def headline_metrics(cand: dict | None) -> dict[str, float]:
    if not cand:
        return {}
    return {k: m["value"] for k, m in cand["metrics"].items() if not m.get("skipped") and m.get("value") is not None}


def quantization_summary(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "quantize_config.json"
    if path.is_file():
        return json.loads(path.read_text())
    config = (
        json.loads((Path(model_dir) / "config.json").read_text()) if (Path(model_dir) / "config.json").is_file() else {}
    )
    return config.get("quantization_config", {})


def quantization_record(model_dir: Path) -> dict[str, Any]:
    """tulu-quant's own record of how the checkpoint was made (quantization.json), empty when absent."""
    from .quantize import RECORD_FILE

    path = Path(model_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def made_with(record: dict[str, Any]) -> list[str]:
    """Card lines on where and how the calibration forward passes ran (the compute dtype and why)."""
    if not record.get("compute_dtype"):
        return []
    where = record.get("device", "?")
    if where == "cpu" and record.get("cpu"):
        where = f"cpu ({record['cpu']['name']}, torch capability {record['cpu']['torch_capability']})"
    reason = f": {record['compute_dtype_reason']}" if record.get("compute_dtype_reason") else ""
    return [f"- Calibration forward passes in {record['compute_dtype']} on {where}{reason}."]


def runtimes(quant: dict) -> list[tuple[str, str]]:
    """(runtime, whether it loads a checkpoint of these settings and why not): transformers from our own tests, vLLM
    from its own checks (tulu_quant.backends.vllm_backend.vllm_refusal), the ONNX builder from what it converts."""
    from ..backends.vllm_backend import vllm_refusal

    def verdict(refusal: str | None, yes: str = "yes") -> str:
        return yes if refusal is None else f"no: {refusal}"

    bits = quant.get("bits")
    onnx = None if bits == 4 else f"the model builder converts 4-bit GPTQ only, not {bits}-bit"
    return [
        ("transformers + GPTQModel (CPU, CUDA)", "yes"),
        ("vLLM 0.32, CUDA (compute capability 7.5+)", verdict(vllm_refusal("gptq", quant, cuda_capability=(8, 0)))),
        ("vLLM 0.32, CPU with AVX512", verdict(vllm_refusal("gptq", quant, cpu_flags=frozenset({"avx512f"})))),
        ("vLLM 0.32, CPU with AVX2 only", verdict(vllm_refusal("gptq", quant, cpu_flags=frozenset({"avx2"})))),
        ("onnxruntime-genai model builder (int4 MatMulNBits)", verdict(onnx)),
    ]


def gguf_rows(gguf_dir: Path, report: dict | None) -> list[dict[str, Any]]:
    """One entry per GGUF file of the export (its gguf.json) with its measured wiki perplexity delta, KL and top-1
    agreement from the report when the file was validated."""
    record = json.loads((Path(gguf_dir) / "gguf.json").read_text())
    by_path = {Path(c["path"]).resolve(): c for c in (report or {}).get("candidates", [])}
    rows = []
    for entry in record.get("files", []):
        cand = by_path.get((Path(gguf_dir) / entry["file"]).resolve())
        deltas, metrics = (cand or {}).get("deltas", {}), (cand or {}).get("metrics", {})
        wiki = next((d for k, d in deltas.items() if k.startswith("ppl.wiki")), None)
        rows.append(
            {
                **entry,
                "imatrix_samples": (record.get("imatrix") or {}).get("samples") if entry.get("imatrix") else None,
                "ppl_delta_pct": wiki.get("delta_pct") if wiki else None,
                "kl_mean": metrics.get("kl_mean", {}).get("value"),
                "top1": metrics.get("top1_agreement", {}).get("value"),
                "passed": cand.get("passed") if cand else None,
            }
        )
    return rows


def gguf_section(rows: list[dict[str, Any]], repo: str, license_note: str) -> list[str]:
    """The card's GGUF section: the files with their measured numbers, and how llama.cpp, Ollama and
    llama-cpp-python run them."""
    if not rows:
        return []

    def num(value, fmt: str) -> str:
        if value is None:
            return "-"
        return f"{format(value, fmt.rstrip('%'))} %" if fmt.endswith("%") else format(value, fmt)

    first = rows[0]["file"]
    lines = [
        "## GGUF (llama.cpp, Ollama, LM Studio)",
        "",
        "Quantized by llama.cpp's own quantizer from the fp16 model (not from the GPTQ checkpoint), weighted by an "
        "importance matrix computed on this run's calibration samples where marked (`gguf/imatrix.gguf`, the file "
        f"`llama-quantize --imatrix` reads). {license_note}",
        "",
        "| file | type | size | bits per weight | importance matrix | wiki perplexity vs fp16 | KL | top-1 | gates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        gates = "-" if r["passed"] is None else ("passed" if r["passed"] else "FAILED")
        matrix = f"yes ({r['imatrix_samples']} samples)" if r.get("imatrix") else "no"
        lines.append(
            f"| `gguf/{r['file']}` | {r['type']} | {human_bytes(r['bytes'])} | {r['bits_per_weight']:.2f} | {matrix} | "
            f"{num(r['ppl_delta_pct'], '+.2f%')} | {num(r['kl_mean'], '.4f')} | {num(r['top1'], '.1f')} | {gates} |"
        )
    fallbacks = sorted({note for r in rows for note in r.get("fallbacks", [])})
    if fallbacks:
        lines += [
            "",
            "llama.cpp stored some matrices in a fallback type (k-quants need widths divisible by 256): "
            + "; ".join(fallbacks)
            + ".",
        ]
    lines += [
        "",
        "```bash",
        f"hf download {repo} gguf/{first} --local-dir .      # one file is all llama.cpp needs",
        f"llama-cli -m gguf/{first} -cnv                        # llama.cpp; the chat template is in the file",
        "```",
        "",
        "```python",
        "from llama_cpp import Llama  # pip install llama-cpp-python",
        f'llm = Llama.from_pretrained("{repo}", filename="gguf/{first}", n_ctx=2048)',
        'print(llm.create_chat_completion([{"role": "user", "content": "Hello!"}])["choices"][0]["message"])',
        "```",
        "",
    ]
    return lines


def model_card(
    model: ModelConfig,
    cfg: PublishConfig,
    variant: str,
    quant: dict,
    report: dict | None,
    cand: dict | None,
    files: dict[str, int],
    chat_example: str,
    onnx: bool,
    record: dict[str, Any] | None = None,
    gguf: list[dict[str, Any]] | None = None,
) -> str:
    """README.md with Hub metadata. Every number in it comes from `quant`, `report`, `files` or the GGUF export's
    record (`gguf`: gguf_rows)."""
    from ..backends.vllm_backend import vllm_refusal

    repo = cfg.repo_id or f"YOUR_NAME/{model.name}-GPTQ"
    bits, group = quant.get("bits"), quant.get("group_size")
    meta = [
        "---",
        f"base_model: {model.hub_base_model}",
        "base_model_relation: quantized",
        f"license: {model.license}",
        *([f"license_name: {model.license_name}"] if model.license == "other" else []),
        *([f"license_link: {model.license_link}"] if model.license_link else []),
        "language:",
        "- en",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "- llama",
        "- tulu",
        "- gptq",
        f"- {bits}-bit",
        "- quantized",
        *(["- onnx"] if onnx else []),
        *(["- gguf"] if gguf else []),
        "inference: false",
        "---",
    ]
    flat = {**quant.get("meta", {}), **quant}  # GPTQModel keeps damp, mse, true_sequential... under "meta"
    settings = ", ".join(
        f"{k} {flat[k]}"
        for k in (
            "bits",
            "group_size",
            "desc_act",
            "sym",
            "damp_percent",
            "mse",
            "true_sequential",
            "act_group_aware",
            "gptaq",
            "iters",
            "checkpoint_format",
        )
        if flat.get(k) is not None
    )
    autoround = quant.get("provider") == "auto-round"  # AutoRound's GPTQ export names itself
    quantizer = f"AutoRound, {quant.get('iters')} tuning steps per layer" if autoround else "GPTQModel"
    lines = meta + [
        "",
        f"# {model.name} GPTQ {bits}-bit (group size {group}) — {variant}",
        "",
        f"A {bits}-bit GPTQ quantization of [{model.hub_base_model}](https://huggingface.co/{model.hub_base_model}), "
        f"made with [tulu-quant](https://github.com/tulu-quant/tulu-quant) ({quantizer}), in the standard GPTQ (v1) "
        "checkpoint format; the runtimes table below says which engines load these settings.",
        "",
        "## License",
        "",
        *[f"- {note}" for note in model.license_notes],
        "",
        "## Prompt format",
        "",
        "```",
        chat_example,
        "```",
        "",
        "## Quantization",
        "",
        f"- Settings: {settings}.",
        *made_with(record or {}),
        f"- Files: {human_bytes(sum(files.values()))} in total; per-file sha256 in `SHA256SUMS`.",
        "",
        "## Runtimes",
        "",
        "| runtime | loads it |",
        "| --- | --- |",
        *[f"| {name} | {answer} |" for name, answer in runtimes(quant)],
        *(
            ["| llama.cpp, Ollama, LM Studio, llama-cpp-python | the `gguf/` files (below), not this checkpoint |"]
            if gguf
            else []
        ),
        "",
        "## Validation against the fp16 model (measured in this run)",
        "",
    ]
    if report and cand:
        protocol = report.get("protocol", {})
        lines += [
            f"Suite `{protocol.get('suite_name', '?')}`; perplexity windows of {protocol.get('context_length', '?')} "
            "tokens; 95% intervals from paired comparisons on the same items.",
            "",
            validation_table(report, cand),
            "",
            *protocol_lines(protocol),
        ]
    else:
        lines += ["Not validated in this run: no numbers are claimed.", ""]
    lines += [
        "## Use it",
        "",
        "transformers (`pip install transformers optimum gptqmodel`):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'tok = AutoTokenizer.from_pretrained("{repo}"{_rev(cfg)})',
        f'model = AutoModelForCausalLM.from_pretrained("{repo}"{_rev(cfg)}, device_map="auto")',
        'ids = tok.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True, '
        'return_tensors="pt")',
        "print(tok.decode(model.generate(ids.to(model.device), max_new_tokens=128)[0]))",
        "```",
        "",
        *(
            [
                "vLLM (tensor parallel over 2 GPUs):",
                "",
                "```bash",
                f"vllm serve {repo}{' --revision ' + cfg.revision if cfg.revision else ''} --quantization gptq "
                "--tensor-parallel-size 2",
                "```",
                "",
            ]
            if vllm_refusal("gptq", quant, cuda_capability=(8, 0)) is None
            else []
        ),
        "Text Generation Inference:",
        "",
        "```bash",
        f"docker run --gpus all -p 8080:80 ghcr.io/huggingface/text-generation-inference --model-id {repo}"
        f"{' --revision ' + cfg.revision if cfg.revision else ''} --quantize gptq",
        "```",
        "",
    ]
    lines += gguf_section(gguf or [], repo, "The license section above applies to these files too.")
    if onnx:
        lines += [
            "onnxruntime-genai (the `onnx/` folder; `pip install onnxruntime-genai`):",
            "",
            "```python",
            "import onnxruntime_genai as og",
            'model = og.Model("onnx")',
            "```",
            "",
        ]
    lines += [
        "## Citation",
        "",
        "Please cite Tulu: Wang et al. 2023, *How Far Can Camels Go? Exploring the State of "
        "Instruction Tuning on Open Resources* (arXiv:2306.04751), and LLaMA: Touvron et al. 2023 "
        "(arXiv:2302.13971).",
        "",
    ]
    return "\n".join(lines)


def _rev(cfg: PublishConfig) -> str:
    return f', revision="{cfg.revision}"' if cfg.revision else ""


def chat_example(model_dir: Path, chat_format: str) -> str:
    """The prompt format as the checkpoint's users will write it (the folder's own template for 'tokenizer')."""
    from transformers import AutoTokenizer

    from ..chat import render, render_tulu, resolve_format
    from ..checkpoint import TOKENIZER_FILES

    if chat_format == "tulu" or not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        return render_tulu([{"role": "user", "content": "Your message here!"}])
    tok = AutoTokenizer.from_pretrained(model_dir)
    return render([{"role": "user", "content": "Your message here!"}], tok, resolve_format(chat_format, tok))


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same file system: no second copy of a 7 GB checkpoint
    except OSError:
        shutil.copy2(src, dst)


# ------------------------------------------------------------------------------------------------------ the stage


def run(
    cfg: RunConfig,
    model_dir: Path,
    report_dir: Path | None,
    out: Path,
    onnx_dir: Path | None = None,
    force: bool = False,
    progress: Progress = NULL,
    gguf_dir: Path | None = None,
) -> PublishResult:
    """Write `out`: the checkpoint in model_dir (hard links where possible), the ONNX export under onnx/, the GGUF
    files and their importance matrix under gguf/, a model card
    describing cfg.model with the numbers of report_dir's report.json, and SHA256SUMS; upload it when
    cfg.publish.push (to publish.repo_id, on publish.revision or the variant's branch)."""
    model, variant = cfg.model, cfg.quantize.variant or "custom"
    cfg = cfg.publish
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"{model_dir}: not a model directory (no config.json); pass the GPTQ checkpoint folder.")
    report, cand = read_report(report_dir, model_dir)
    if cfg.push and not cfg.repo_id:
        raise PublishError("publish.push needs publish.repo_id (--repo-id you/NAME); nothing was uploaded.")
    revision = cfg.revision or (variant if variant != "custom" else None)
    cfg = cfg.model_copy(update={"revision": revision})
    with atomic_dir(out, force) as tmp:
        for src in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name not in SKIP_FILES):
            link_or_copy(src, tmp / src.relative_to(model_dir))
        if onnx_dir is not None:
            for src in sorted(p for p in Path(onnx_dir).rglob("*") if p.is_file() and p.name not in SKIP_FILES):
                link_or_copy(src, tmp / "onnx" / src.relative_to(onnx_dir))
        gguf = gguf_rows(gguf_dir, report) if gguf_dir is not None else None
        if gguf_dir is not None:  # the model files and imatrix.gguf; llama.cpp reads its tokenizer from each file
            for src in sorted(Path(gguf_dir).glob("*.gguf")):
                link_or_copy(src, tmp / "gguf" / src.name)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        card = model_card(
            model,
            cfg,
            variant,
            quantization_summary(model_dir),
            report,
            cand,
            files,
            chat_example(model_dir, model.chat_format),
            onnx_dir is not None,
            quantization_record(model_dir),
            gguf,
        )
        (tmp / "README.md").write_text(card)
        files["README.md"] = (tmp / "README.md").stat().st_size
        with progress.task("sha256", total=sum(files.values()), unit="B", unit_scale=True) as advance:
            sums = []
            for rel in sorted(files):
                sums.append(f"{sha256_file(tmp / rel)}  {rel}")
                advance(files[rel])
        (tmp / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        files["SHA256SUMS"] = (tmp / "SHA256SUMS").stat().st_size
    result = PublishResult(Path(out), files, cfg.repo_id, revision, False, None, headline_metrics(cand))
    if cfg.push:
        result.commit_url, result.pushed = push(Path(out), cfg, model.name, variant), True
        log.info(
            "uploaded %d files (%s) to %s@%s: %s",
            len(files),
            human_bytes(result.bytes),
            cfg.repo_id,
            revision or "main",
            result.commit_url,
        )
    else:
        log.info(
            "dry run: would upload %d files (%s) to %s@%s; pass --push (and --repo-id) to upload",
            len(files),
            human_bytes(result.bytes),
            cfg.repo_id or "<repo-id>",
            revision or "main",
        )
    return result


def push(folder: Path, cfg: PublishConfig, name: str, variant: str) -> str:
    """upload_folder to cfg.repo_id on branch cfg.revision; returns the commit URL or raises PublishError."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found; run `hf auth login` or set HF_TOKEN, then publish again "
            "(nothing was uploaded)."
        )
    api = HfApi(token=token)
    try:
        api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True)
        if cfg.revision and cfg.revision != "main":
            api.create_branch(cfg.repo_id, branch=cfg.revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=cfg.repo_id,
            folder_path=folder,
            revision=cfg.revision,
            commit_message=cfg.commit_message.format(name=name, variant=variant),
        )
    except (HfHubHTTPError, OSError) as err:  # OSError covers connection errors of requests and httpx
        raise PublishError(
            f"upload to {cfg.repo_id} failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "no commit was made, check the token and network and publish again."
        ) from None
    except Exception as err:
        if type(err).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):  # httpx2 in hub 2.x
            raise PublishError(
                f"the Hub is unreachable ({type(err).__name__}); nothing was uploaded, check the network "
                "and publish again."
            ) from None
        raise
    return str(info.commit_url)


# ------------------------------------------------------------------------------------------------------ pipeline


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's publish: RUN_DIR/gptq (+ RUN_DIR/onnx, RUN_DIR/gguf) and RUN_DIR/report -> RUN_DIR/publish."""
    out = ctx.out(STAGE)
    model_dir = ctx.produced("quantize")
    report_dir = ctx.manifest.output_dir("validate")
    onnx_dir = ctx.manifest.output_dir("export_onnx") if cfg.publish.include_onnx else None
    gguf_dir = ctx.recorded("export_gguf") if cfg.publish.include_gguf and "export_gguf" in cfg.stages else None
    variant = cfg.quantize.variant or "custom"

    def work() -> dict[str, Any]:
        result = run(cfg, model_dir, report_dir, out, onnx_dir, True, ctx.progress, gguf_dir)
        return {
            "bytes": result.bytes,
            "files": len(result.files),
            "pushed": result.pushed,
            "repo_id": result.repo_id,
            "revision": result.revision,
            "commit_url": result.commit_url,
        }

    inputs = [p for p in (model_dir, report_dir, onnx_dir, gguf_dir) if p is not None]
    config = {
        "publish": cfg.publish.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "variant": variant,
    }
    return Step(
        STAGE.name,
        inputs,
        [out],
        config,
        work,
        lambda s: f"{s['files']} files, {human_bytes(s['bytes'])}, " + ("pushed" if s["pushed"] else "dry run"),
    )
