"""Which model artifacts a run directory holds, what each one is, and which one runs fastest on this machine.

A run's manifest records every finished stage; the artifact stages (tulu_quant.stages: the recovered reference, the
GPTQ checkpoint, the ONNX export, the GGUF files) are the models a user can serve or compare. Each describes itself
(export.json, quantize_config.json, config.json; a GGUF file its folder's gguf.json). The demo serves
``choose(run_dir)``, the run summary and the sweep list ``run_artifacts(run_dir)``.

Fastest here (``rank``): on CUDA the GPTQ checkpoint's 4-bit kernels, then a CUDA ONNX export, then the full-precision
model; on CPU the ONNX export (int4 first, onnxruntime-genai), then a GGUF (llama.cpp; its smallest file first), then
the full-precision model (computed in float32), then GPTQ (transformers dequantizes on CPU), which comes first when
float32 would not fit in memory. docs/benchmarks.md has the CPU decode speeds behind the order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stages
from .backends import artifact_paths, detect_kind
from .errors import MissingPath, UserValueError
from .manifest import MANIFEST, Manifest


@dataclass(frozen=True)
class Artifact:
    path: Path
    kind: str  # torch, gptq, onnx or gguf
    precision: str | None = None  # onnx: int4/fp16/fp32; gptq: 4-bit...; gguf: its type (Q4_K_M...); torch: the dtype
    target: str | None = None  # onnx: the execution target it was exported for (cpu, cuda, dml, webgpu)
    stage: str | None = None  # the run stage that wrote it
    chat_format: str | None = None  # as the run recorded it (None: decided from the tokenizer)

    @property
    def label(self) -> str:
        if self.kind == "onnx":
            return f"{self.precision or ''} ONNX export ({self.target or 'cpu'})".strip()
        if self.kind == "gptq":
            return f"GPTQ {self.precision or ''} checkpoint".replace("  ", " ")
        if self.kind == "gguf":
            return f"GGUF {self.precision or ''} (llama.cpp)".replace("  ", " ")
        return f"{self.precision or 'full-precision'} model"


@dataclass(frozen=True)
class Choice:
    artifact: Artifact
    reason: str
    run_dir: Path | None = None
    others: tuple[Artifact, ...] = ()


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def describe_folder(path: Path, stage: str | None = None, chat_format: str | None = None) -> Artifact:
    """What a model folder (or GGUF file) holds, from its own files (export.json, quantize_config.json, config.json,
    gguf.json)."""
    path = Path(path)
    kind = detect_kind(path)
    if kind == "gguf":
        from .backends.gguf_backend import resolve_file

        path = resolve_file(path)
        listed = {f["file"]: f for f in read_json(path.parent / "gguf.json").get("files", [])}
        return Artifact(path, kind, listed.get(path.name, {}).get("type"), None, stage, chat_format)
    if kind == "onnx":
        record = read_json(path / "export.json")
        return Artifact(path, kind, record.get("precision"), record.get("target", "cpu"), stage, chat_format)
    config = read_json(path / "config.json")
    if kind == "gptq":
        quant = read_json(path / "quantize_config.json") or config.get("quantization_config", {})
        return Artifact(path, kind, f"{quant['bits']}-bit" if "bits" in quant else None, None, stage, chat_format)
    return Artifact(path, kind, config.get("dtype") or config.get("torch_dtype"), None, stage, chat_format)


def run_artifacts(run_dir: Path) -> list[Artifact]:
    """The model artifacts a run directory's manifest records (finished artifact stages whose folder still exists; a
    GGUF export's files one by one), in pipeline order: the reference first."""
    manifest = Manifest.load(run_dir)
    found = []
    for stage in stages.artifact_stages():
        path, entry = manifest.output_dir(stage), manifest.stages.get(stage, {})
        if path is not None and path.is_dir() and entry.get("status") == "done":
            chat_format = entry.get("config", {}).get("chat_format") or entry.get("config", {}).get("model", {}).get(
                "chat_format"
            )
            found += [describe_folder(p, stage, chat_format) for p in artifact_paths(path)]
    return found


def rank(artifact: Artifact, cuda: bool, onnx_targets: set[str], memory: int | None = None) -> float | None:
    """Lower is faster on this machine; None: it cannot run here. CUDA: GPTQ kernels, then a CUDA ONNX export, then
    the full-precision model. CPU: ONNX (int4 first, onnxruntime-genai), then the full-precision model (computed in
    float32), then GPTQ (transformers dequantizes on CPU), which comes first when float32 would not fit in memory. A
    GGUF ranks after the ONNX export, its smaller files (fewer bits, faster decode on CPU) first; on CUDA after GPTQ."""
    if artifact.kind == "gguf":
        return (2500 if cuda else 1000) + weights_bytes(artifact.path) / 2**50  # smaller first, below the next kind
    if artifact.kind == "onnx":
        if (artifact.target or "cpu") not in onnx_targets:
            return None
        if cuda:
            return 1000 if artifact.target == "cuda" else 3000
        return 0 if artifact.precision == "int4" else 500
    if artifact.kind == "gptq":
        return 0 if cuda else 3000
    bytes_per_weight = {"float32": 4}.get(artifact.precision or "", 2)
    if not cuda and memory is not None and weights_bytes(artifact.path) * 4 // bytes_per_weight > memory:  # as float32
        return 4000
    return 2000


def pick(
    artifacts: list[Artifact], cuda: bool, onnx_targets: set[str], memory: int | None = None
) -> tuple[Artifact, str]:
    """The artifact to serve and why, in one sentence."""
    runnable = [(r, i, a) for i, a in enumerate(artifacts) if (r := rank(a, cuda, onnx_targets, memory)) is not None]
    if not runnable:
        raise UserValueError(
            f"none of {[str(a.path) for a in artifacts]} can run here (ONNX exports for "
            f"{sorted({a.target for a in artifacts})}; this machine runs {sorted(onnx_targets)}); "
            "export for cpu or pass another folder."
        )
    _, _, best = min(runnable)
    machine = "CUDA is available" if cuda else "no CUDA here"
    if best.kind == "gptq" and cuda:
        why = "its 4-bit CUDA kernels decode fastest"
    elif best.kind == "onnx":
        why = f"onnxruntime-genai runs the {best.precision or ''} export fastest on {best.target or 'cpu'}"
    elif best.kind == "gguf":
        why = f"llama.cpp runs the {best.precision or ''} GGUF fastest of what runs here"
    elif best.kind == "gptq":
        why = "the full-precision model would not fit in memory as float32"
    else:
        why = "the run has no faster artifact that runs here (a quantized or ONNX output)"
    return best, f"{machine}: {why}"


def weights_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():  # a GGUF
        return path.stat().st_size
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def choose(path: Path, device: str = "auto") -> Choice:
    """A model folder is served as it is; a run directory (with manifest.json) serves its fastest artifact here."""
    path = Path(path)
    if not path.is_dir() and not (path.is_file() and path.suffix == ".gguf"):
        raise MissingPath(
            f"{path}: no such directory; pass a run directory (e.g. runs/standin), a model folder or a .gguf file."
        )
    if not (path / MANIFEST).is_file():
        parent = next((d for d in (path.parent, path.parent.parent) if (d / MANIFEST).is_file()), None)  # GGUF: 2 up
        recorded = {str(a.path.resolve()): a for a in run_artifacts(parent)} if parent else {}
        artifact = recorded.get(str(path.resolve())) or describe_folder(path)
        return Choice(artifact, "a model folder, served as given", parent)
    artifacts = run_artifacts(path)
    if not artifacts:
        raise MissingPath(
            f"{path / MANIFEST}: records no finished recover, quantize or export_onnx output; "
            "run `make quantize` (or `tulu-quant run`) first."
        )
    cuda = _cuda_available() if device == "auto" else device == "cuda"
    best, reason = pick(artifacts, cuda, _onnx_targets(cuda), _available_memory())
    return Choice(best, reason, path, tuple(a for a in artifacts if a != best))


def reference_folder(path: Path) -> Path:
    """--compare: a model folder, or a run directory's recovered full-precision model."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        recovered = Manifest.load(path).output_dir(stages.REFERENCE)
        if recovered is None or not recovered.is_dir():
            raise MissingPath(f"{path / MANIFEST}: records no recovered model to compare with; pass a model folder.")
        return recovered
    detect_kind(path)
    return path


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _onnx_targets(cuda: bool) -> set[str]:
    from .backends.onnx_backend import TARGETS, runnable_here

    return {t for t in TARGETS if runnable_here(t) is None and (t != "cuda" or cuda)}


def _available_memory() -> int:
    import psutil

    return psutil.virtual_memory().available
