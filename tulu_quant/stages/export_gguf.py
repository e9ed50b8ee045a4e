"""Export GGUF for llama.cpp (and Ollama, LM Studio, llama-cpp-python): one file per quantization type, weighted by an
importance matrix from our own calibration samples, each verified against the fp16 model.

    model (HF folder) --llama.cpp's convert_hf_to_gguf.py--> full-precision GGUF (f16/bf16/f32, temporary)
    calib/ samples --the model one decoder layer at a time (torch)--> per-channel mean squared inputs -> imatrix.gguf
    full-precision GGUF (+ the matrix) --llama.cpp's quantizer (llama_model_quantize), per type--> out/NAME-TYPE.gguf
    + the model's Hugging Face tokenizer files (every backend tokenizes alike), gguf.json: per file its type, size,
      bits per weight, sha256, tensor types, fallbacks and verification

The converter. PyPI's `gguf` package writes and reads GGUF but has no Hugging Face converter; auto-round ships a copy of
llama.cpp's conversion classes without the command that drives them. llama.cpp's own `convert_hf_to_gguf.py` (its
tokenizer handling included: SentencePiece for LLaMA-1, BPE with the pre-tokenizer of each known model) is in the
llama-cpp-python source distribution on PyPI, from the same llama.cpp commit as the runtime `make install` builds; it is
fetched once (sha256-pinned) and run in a subprocess with the gguf-py it vendors, which is newer than PyPI's in the
details the converter uses. Our process reads and writes GGUF with PyPI's `gguf` (imatrix.gguf, metadata, tensors).

The importance matrix is what llama.cpp's `llama-imatrix` computes: for every weight matrix of every decoder layer,
the sum over calibration tokens of each input channel's squared activation and the token count (in_sum2 / counts in
imatrix.gguf, the file `llama-quantize --imatrix` reads); the quantizer weights each weight's rounding error by the
mean. Ours comes from the same Tulu-format calibration samples as GPTQ (calib/), one decoder layer in memory at a time,
so a 13B model needs a few GB. Like `llama-imatrix` by default, it covers the decoder layers, not the output matrix.

Metadata: the converter writes the architecture, tokenizer and chat template (ours: the recovered folder's
tokenizer_config.json carries it); the quantizer adds general.name, general.license (+ name, link), general.quantized_by
and tulu_quant.source_sha256 (the digest of the recovered weights' sha256 list) and tulu_quant.imatrix.

k-quants (Q*_K*) store blocks of 256 weights along a row; a matrix whose input width is not a multiple of 256 is stored
in llama.cpp's fallback type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, ...), which gguf.json and the report show per
file; a width no block type fits (not a multiple of 32) would fall back to F16 and is refused before any work.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import TOKENIZER_FILES, atomic_dir, copy_if_present, refuse_existing
from ..config import ExportGgufConfig, RunConfig
from ..errors import MissingLibrary, UserValueError
from ..fetch import PinnedSource, fetch_source, sha256_of
from ..progress import NULL, Progress, captured, human_bytes, human_seconds, measure
from .base import Context, Stage, StageNotReady, Step

log = logging.getLogger(__name__)

STAGE = Stage(
    "export_gguf",
    output="gguf",
    artifact="GGUF",
    sweep="shared",
    requires=(
        ("llama_cpp", "make install (it builds llama-cpp-python), or see docs/gguf.md"),
        ("gguf", "pip install gguf"),
    ),
)

# llama.cpp's converter, from the llama-cpp-python release `make install` builds (llama.cpp commit 0c1e57098).
CONVERTER = PinnedSource(
    package="llama-cpp-python",
    version="0.3.36",
    sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    members=(
        "vendor/llama.cpp/convert_hf_to_gguf.py",
        "vendor/llama.cpp/conversion/",
        "vendor/llama.cpp/gguf-py/",
        "vendor/llama.cpp/LICENSE",
    ),
    license="MIT (llama.cpp, llama-cpp-python)",
)
RECORD = "gguf.json"
IMATRIX_FILE = "imatrix.gguf"
# A LLaMA decoder layer's matrices: Hugging Face module -> GGUF tensor (llama.cpp's names, blk.N.NAME.weight).
IMATRIX_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# llama.cpp's tensor_type_fallback (src/llama-quant.cpp): the type a matrix gets when its width does not fit the block.
FALLBACK = {
    "Q2_K": "Q4_0",
    "Q3_K": "Q4_0",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
    "IQ4_XS": "IQ4_NL",
}
FLOAT_TYPES = ("F16", "BF16", "F32")


class GgufError(UserValueError):
    """Bad input to the GGUF export, or a file that failed its checks: one sentence naming what to fix."""


@dataclass
class GgufFile:
    type: str
    file: str
    bytes: int
    bits_per_weight: float
    sha256: str
    tensor_types: dict[str, int]  # ggml type -> number of tensors stored in it
    fallbacks: list[str]  # "width W (what): TYPE" for matrices stored in a fallback type
    imatrix: bool
    seconds: float
    verification: dict[str, Any] = field(default_factory=dict)


@dataclass
class GgufResult:
    out: Path
    files: list[GgufFile]
    source_type: str
    parameters: int
    source_sha256: str
    imatrix: dict[str, Any] | None  # samples, tokens, seconds, file; None when off
    convert_seconds: float
    seconds: float = 0.0
    peak_rss: int = 0
    inputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        files = ", ".join(
            f"{f.type} {human_bytes(f.bytes)} ({f.bits_per_weight:.2f} bpw"
            + (f", top-1 {f.verification['top1_agreement']:.1f}%" if "top1_agreement" in f.verification else "")
            + ")"
            for f in self.files
        )
        matrix = f"importance matrix from {self.imatrix['samples']} samples" if self.imatrix else "no importance matrix"
        return (
            f"GGUF in {self.out}: {files}; {matrix}; {human_seconds(self.seconds)}, peak RSS "
            f"{human_bytes(self.peak_rss)}"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def ftype_of(qtype: str) -> int:
    """llama.h's llama_ftype of a type name (gguf's LlamaFileType mirrors the enum)."""
    from gguf import LlamaFileType

    return int(LlamaFileType["ALL_F32" if qtype == "F32" else f"MOSTLY_{qtype}"])


def bulk_type(qtype: str) -> str:
    """The ggml type most matrices of a file type are stored in: Q4_K_M -> Q4_K, Q8_0 -> Q8_0."""
    return re.sub(r"(_K)_[SML]$", r"\1", qtype)


def block_size(ggml_type: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]][0]


def matrix_widths(model_config: dict[str, Any]) -> dict[int, str]:
    """Input width (the row length llama.cpp's blocks tile) -> the decoder matrices of that width."""
    hidden = int(model_config["hidden_size"])
    heads = int(model_config["num_attention_heads"])
    head_dim = int(model_config.get("head_dim") or hidden // heads)
    widths: dict[int, list[str]] = {}
    for what, width in (
        ("q/k/v, gate/up", hidden),
        ("attention output", heads * head_dim),
        ("down projection", int(model_config["intermediate_size"])),
    ):
        widths.setdefault(width, []).append(what)
    return {width: ", ".join(names) for width, names in widths.items()}


def storage_plan(model_config: dict[str, Any], qtype: str) -> list[str]:
    """The decoder matrices a type cannot store in its own blocks and the fallback llama.cpp uses instead ("width W
    (what): TYPE"); a GgufError when even the fallback does not fit (llama.cpp would store them in F16)."""
    if qtype in FLOAT_TYPES:
        return []
    own = bulk_type(qtype)
    notes = []
    for width, what in matrix_widths(model_config).items():
        if width % block_size(own) == 0:
            continue
        fallback = FALLBACK.get(own, own)
        if width % block_size(fallback):
            raise GgufError(
                f"{qtype}: the model's {what} width {width} fits neither {own}'s blocks of {block_size(own)} nor "
                f"{fallback}'s of {block_size(fallback)}, so llama.cpp would store those matrices in F16; choose a "
                "float type (F16, BF16) for this model."
            )
        notes.append(f"width {width} ({what}): {fallback}")
    return notes


def nominal_bits(qtype: str) -> float:
    """Bits per weight of a type's own blocks (Q4_K: 144 bytes per 256 weights = 4.5)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[bulk_type(qtype)]]
    return 8.0 * size / block


def estimated_bytes(types: list[str], parameters: int, source_type: str = "f16") -> int:
    """An upper estimate of what the export writes: each file at its type's bits plus 1.5 (the _M types' Q6_K
    matrices, fallbacks, the output matrix), and the temporary full-precision GGUF."""
    files = sum(parameters * (nominal_bits(t) + (0 if t in FLOAT_TYPES else 1.5)) / 8 for t in types)
    return int(files + parameters * {"f16": 2, "bf16": 2, "f32": 4}[source_type])


def file_name(model_name: str, qtype: str) -> str:
    return f"{model_name}-{qtype}.gguf"


def bits_per_weight(size: int, parameters: int) -> float:
    return 8.0 * size / parameters


def source_digest(model_dir: Path) -> tuple[str, dict[str, str]]:
    """(sha256 of the 'SHA256  NAME' lines of the weight files, those per-file sha256s): the recovered model's identity,
    as sha256sum would list it."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    sums = {p.name: sha256_of(p) for p in files}
    listing = "".join(f"{digest}  {name}\n" for name, digest in sums.items())
    return hashlib.sha256(listing.encode()).hexdigest(), sums


def metadata_overrides(cfg: RunConfig, source_sha256: str, imatrix: str | None) -> dict[str, str]:
    """The string keys the quantizer writes into every file (llama.cpp keeps values under 128 bytes)."""
    from .. import __version__

    model = cfg.model
    values = {
        "general.name": model.name,
        "general.license": model.license,
        "general.license.name": model.license_name,
        "general.license.link": model.license_link,
        "general.quantized_by": f"tulu-quant {__version__}",
        "tulu_quant.source_sha256": source_sha256,
        "tulu_quant.imatrix": imatrix or "none",
    }
    return {k: str(v)[:127] for k, v in values.items() if v}


# ------------------------------------------------------------------------------------------------------ the converter


def converter_script() -> Path:
    """llama.cpp's convert_hf_to_gguf.py (fetched once from the pinned llama-cpp-python source)."""
    return fetch_source(CONVERTER) / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"


def supported_architectures(script: Path) -> set[str]:
    """The Hugging Face architectures llama.cpp's converter registers (its --print-supported-models)."""
    done = subprocess.run(
        [sys.executable, str(script), "--print-supported-models"], capture_output=True, text=True, check=False
    )
    return set(re.findall(r"^\s*-\s*(\w+)\s*$", done.stdout + done.stderr, flags=re.M))


def source_view(model_dir: Path, folder: Path, chat_format: str) -> Path:
    """model_dir as the converter should read it: its files linked into `folder`, with the chat template of the run's
    format installed in the tokenizer files (copies), so the GGUF carries the template our prompts use."""
    from ..chat import install_template

    folder.mkdir(parents=True)
    for src in Path(model_dir).iterdir():
        if src.name in ("tokenizer_config.json", "chat_template.jinja"):
            shutil.copy2(src, folder / src.name)
        elif src.is_file():
            (folder / src.name).symlink_to(src.resolve())
    install_template(folder, chat_format)
    return folder


def check_architecture(model_dir: Path, model_config: dict[str, Any]) -> None:
    architecture = (model_config.get("architectures") or ["?"])[0]
    known = supported_architectures(converter_script())
    if known and architecture not in known:
        raise GgufError(
            f"{model_dir / 'config.json'}: architecture {architecture} is not one llama.cpp's converter knows "
            f"({len(known)} are, e.g. LlamaForCausalLM); GGUF export needs a model llama.cpp supports."
        )


def convert(model_dir: Path, out_file: Path, source_type: str, log_file: Path) -> None:
    """The one call into llama.cpp's converter (a subprocess; its output goes to log_file)."""
    script = converter_script()
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(out_file), "--outtype", source_type]
    log.debug("converter: %s", " ".join(cmd))
    with open(log_file, "ab") as sink:
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not out_file.is_file():
        raise GgufError(
            f"llama.cpp's converter failed on {model_dir} (exit {done.returncode}); its output is in {log_file}."
        )


# ------------------------------------------------------------------------------------------------ importance matrix


@dataclass
class ImportanceMatrix:
    sums: dict[str, Any]  # GGUF tensor name -> float64 [in_features]: sum of squared inputs over the tokens
    tokens: int  # tokens seen by every matrix (each sample's every position)
    samples: int

    def means(self) -> dict[str, Any]:
        """What llama.cpp's quantizer takes: each input channel's mean squared activation (float32)."""
        import numpy as np

        return {name: (values / self.tokens).astype(np.float32) for name, values in self.sums.items()}


def importance_matrix(
    model_dir: Path, samples, batch_size: int, device: str = "cpu", progress: Progress = NULL
) -> ImportanceMatrix:
    """Run the calibration samples [N, L] through the model one decoder layer at a time (float32) and accumulate, for
    each matrix, the per-channel sum of its squared inputs (forward pre-hooks on the layer's Linear modules)."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from ..layerwise_verify import LayerStream

    stream = LayerStream(model_dir)
    cfg = stream.config
    sums: dict[str, Any] = {}
    with (
        torch.inference_mode(),
        stream.ckpt.reader() as get,
        progress.task("importance matrix", total=cfg.num_hidden_layers, unit="layer") as advance,
    ):
        embed = get("model.embed_tokens.weight").float()
        hidden = [torch.nn.functional.embedding(batch, embed).to(device) for batch in samples.split(batch_size)]
        del embed
        positions = torch.arange(samples.shape[1], device=device)[None]
        position_embeddings = LlamaRotaryEmbedding(cfg).to(device)(hidden[0], positions)
        for i in range(cfg.num_hidden_layers):
            layer = stream.layer(get, i).to(device)
            layer_sums: dict[str, Any] = {}
            hooks = [
                layer.get_submodule(module).register_forward_pre_hook(
                    _squares_into(layer_sums, f"blk.{i}.{tensor}.weight")
                )
                for module, tensor in IMATRIX_TENSORS.items()
            ]
            hidden = [
                layer(h, attention_mask=None, position_ids=positions, position_embeddings=position_embeddings)
                for h in hidden
            ]
            for hook in hooks:
                hook.remove()
            sums.update({name: values.cpu().numpy() for name, values in layer_sums.items()})
            del layer
            advance()
    return ImportanceMatrix(sums, tokens=int(samples.numel()), samples=int(samples.shape[0]))


def _squares_into(sums: dict[str, Any], name: str):
    """A forward pre-hook adding the per-channel sum of the squared inputs of a Linear module to sums[name]."""

    def hook(module, args):
        x = args[0].reshape(-1, args[0].shape[-1]).double()
        sums[name] = sums.get(name, 0) + (x * x).sum(0)

    return hook


def write_imatrix(path: Path, matrix: ImportanceMatrix, dataset: str, chunk_size: int) -> None:
    """imatrix.gguf as llama.cpp's llama-imatrix writes it: NAME.in_sum2 [1, width] and NAME.counts [1, 1] float32
    per matrix, general.type imatrix, imatrix.datasets / chunk_count / chunk_size."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, [dataset])
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, matrix.samples)
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, chunk_size)
    for name, values in matrix.sums.items():
        writer.add_tensor(f"{name}.in_sum2", values.astype(np.float32)[None, :])
        writer.add_tensor(f"{name}.counts", np.array([[matrix.tokens]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_imatrix(path: Path) -> dict[str, Any]:
    """Mean squared activations per matrix from an imatrix.gguf (in_sum2 / counts)."""
    import numpy as np
    from gguf import GGUFReader

    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in GGUFReader(path).tensors}
    return {
        name.removesuffix(".in_sum2"): (
            values.reshape(-1) / tensors[name.replace(".in_sum2", ".counts")].reshape(-1)[0]
        ).astype(np.float32)
        for name, values in tensors.items()
        if name.endswith(".in_sum2")
    }


# ------------------------------------------------------------------------------------------------------ the quantizer


def quantize_file(
    src: Path, dst: Path, qtype: str, imatrix: dict[str, Any] | None, overrides: dict[str, str], threads: int
) -> None:
    """The one call into llama.cpp's quantizer (llama_model_quantize through llama-cpp-python's ctypes binding)."""
    import numpy as np

    llama_cpp = _import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype_of(qtype)
    keep = []  # the arrays the C structs point into must live until the call returns
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # NULL-terminated
        for entry, (name, values) in zip(entries, imatrix.items()):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(values)
            entry.name, entry.size = name.encode(), values.size
            entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(entries)
    kv = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()  # terminated by an empty key
    for entry, (key, value) in zip(kv, overrides.items()):
        entry.key, entry.tag = key.encode(), llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
        entry.value.val_str = value.encode()[:127]
    params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not dst.is_file():
        raise GgufError(f"llama.cpp's quantizer failed on {qtype} (status {status}); its output is in the log.")


def tensor_types(path: Path) -> tuple[dict[str, int], int]:
    """(ggml type -> tensors stored in it, parameters) of a GGUF file, read with the gguf package."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    parameters = 0
    for tensor in GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
        parameters += int(tensor.n_elements)
    return dict(sorted(counts.items())), parameters


# ------------------------------------------------------------------------------------------------------ verification


def verify_file(
    path: Path, reference: dict[str, Any], cfg: ExportGgufConfig, threads: int, text: str
) -> dict[str, Any]:
    """Score the reference's tokens with the file and generate greedily; fail below the top-1 floor."""
    from ..backends.gguf_backend import GgufBackend
    from ..config import GenerationSettings
    from .export_onnx import compare_logits

    backend = GgufBackend(path, device="cpu", threads=threads)
    try:
        metrics = compare_logits(reference["logits"], backend.logits(reference["ids"]), reference["ids"])
        greedy = backend.generate(reference["prompt"], GenerationSettings(max_new_tokens=cfg.verify_new_tokens))
        agrees = backend.llama_tokenizer_agrees(text[:2000])
    finally:
        backend.close()
    record = {
        **metrics,
        "generated_tokens": len(greedy),
        "sample": backend.tokenizer.decode(greedy, skip_special_tokens=True),
        "llama_tokenizer_agrees": agrees,
    }
    if not metrics["top1_agreement"] >= cfg.min_top1_agreement:
        raise GgufError(
            f"{path.name} failed verification: its top-1 agreement with the fp16 model is "
            f"{metrics['top1_agreement']:.1f}% (floor {cfg.min_top1_agreement:g}%, KL {metrics['kl_mean']:.3g})."
        )
    if not greedy:
        raise GgufError(f"{path.name} failed verification: its greedy generation produced no token.")
    return record


def reference_outputs(model_dir: Path, cfg: ExportGgufConfig, chat_format: str, text: str) -> dict[str, Any]:
    """The fp16 model's logits (float32, one decoder layer in memory at a time, so 13B needs a few GB) on the
    verification window, and the verification prompt's ids."""
    import torch
    from transformers import AutoTokenizer

    from ..chat import render
    from ..layerwise_verify import LayerStream
    from .export_onnx import VERIFY_PROMPT, verification_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = verification_ids(tokenizer, text, cfg.verify_tokens)
    prompt = tokenizer(render([{"role": "user", "content": VERIFY_PROMPT}], tokenizer, chat_format)).input_ids
    logits = LayerStream(model_dir).logits(torch.tensor([ids]))[0].numpy()
    return {"ids": ids, "logits": logits, "prompt": prompt}


# ------------------------------------------------------------------------------------------------------ the stage


def check_request(cfg: ExportGgufConfig, model_dir: Path) -> dict[str, Any]:
    """Everything that can be refused before any work: the model folder and each type's fit."""
    if not (model_dir / "config.json").is_file():
        raise GgufError(f"{model_dir}: no config.json; pass the recovered fp16 model folder as --model.")
    model_config = json.loads((model_dir / "config.json").read_text())
    for qtype in cfg.types:
        storage_plan(model_config, qtype)
    return model_config


def run(
    cfg: RunConfig,
    model_dir: Path,
    out: Path,
    calib_dir: Path | None = None,
    force: bool = False,
    progress: Progress = NULL,
    log_file: Path | None = None,
    verify_text: str | None = None,
) -> GgufResult:
    """Export model_dir to out as cfg.export_gguf says: one GGUF per type (with the importance matrix of calib_dir's
    samples when export_gguf.imatrix), the tokenizer files, gguf.json. llama.cpp's output goes to log_file (None:
    OUT.export.log beside out)."""
    from transformers import AutoTokenizer

    from ..backends.gguf_backend import default_threads
    from ..chat import resolve_format
    from . import calibrate
    from .calibrate import load_samples

    model_dir, out = Path(model_dir), Path(out)
    gcfg = cfg.export_gguf
    model_config = check_request(gcfg, model_dir)
    _import_llama_cpp()
    check_architecture(model_dir, model_config)
    refuse_existing(out, force)
    samples = None
    if gcfg.imatrix:
        calib_dir = calibrate.beside(cfg, model_dir, out, calib_dir, progress)
        samples = load_samples(calib_dir)
        samples = samples[: gcfg.imatrix_samples] if gcfg.imatrix_samples else samples
    chat_format = resolve_format(cfg.model.chat_format, AutoTokenizer.from_pretrained(model_dir))
    threads = gcfg.threads or default_threads()
    log_file = log_file or out.with_name(out.name + ".export.log")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with measure() as usage, atomic_dir(out, force) as tmp:
        with progress.task(f"convert to {gcfg.source_type.upper()} GGUF", total=None):
            source_sha256, weight_sums = source_digest(model_dir)
            with measure() as converting:
                view = source_view(model_dir, tmp / ".source", chat_format)
                full = tmp / f".{file_name(cfg.model.name, gcfg.source_type.upper())}"
                convert(view, full, gcfg.source_type, log_file)
        matrix_record, means, described = None, None, None
        if samples is not None:
            with measure() as timing:
                matrix = importance_matrix(model_dir, samples, gcfg.imatrix_batch, _device(gcfg), progress)
                write_imatrix(tmp / IMATRIX_FILE, matrix, Path(calib_dir).name, int(samples.shape[1]))
            means = matrix.means()
            calib_sha256 = sha256_of(Path(calib_dir) / "calibration.safetensors")
            matrix_record = {
                "file": IMATRIX_FILE,
                "samples": matrix.samples,
                "tokens": matrix.tokens,
                "seq_len": int(samples.shape[1]),
                "matrices": len(means),
                "calibration": str(Path(calib_dir).resolve()),
                "calibration_sha256": calib_sha256,
                "seconds": round(timing.seconds, 2),
            }
            described = f"{matrix.samples} x {int(samples.shape[1])} calibration tokens, sha256 {calib_sha256}"
        overrides = metadata_overrides(cfg, source_sha256, described)
        text = verify_text if verify_text is not None else _verification_text(gcfg)
        reference = reference_outputs(model_dir, gcfg, chat_format, text) if gcfg.verify else None
        files = []
        with progress.task("quantize GGUF", total=len(gcfg.types), unit="file") as advance:
            for qtype in gcfg.types:
                dst = tmp / file_name(cfg.model.name, qtype)
                with measure() as timing, captured(log_file):
                    quantize_file(full, dst, qtype, means if qtype not in FLOAT_TYPES else None, overrides, threads)
                types, parameters = tensor_types(dst)
                verification = verify_file(dst, reference, gcfg, threads, text) if reference else {"skipped": "off"}
                files.append(
                    GgufFile(
                        qtype,
                        dst.name,
                        dst.stat().st_size,
                        round(bits_per_weight(dst.stat().st_size, parameters), 3),
                        sha256_of(dst),
                        types,
                        storage_plan(model_config, qtype),
                        means is not None and qtype not in FLOAT_TYPES,
                        round(timing.seconds, 2),
                        verification,
                    )
                )
                log.info(
                    "wrote %s (%s, %.2f bits per weight)",
                    dst.name,
                    human_bytes(files[-1].bytes),
                    files[-1].bits_per_weight,
                )
                advance()
        full.unlink()
        copy_if_present(view, tmp, TOKENIZER_FILES + ("generation_config.json",))  # with the chat template
        shutil.rmtree(view)
        result = GgufResult(
            out,
            files,
            gcfg.source_type,
            parameters,
            source_sha256,
            matrix_record,
            round(converting.seconds, 2),
            inputs={
                "model": str(model_dir.resolve()),
                "weights_sha256": json.dumps(weight_sums),
                **({"calib": str(Path(calib_dir).resolve())} if samples is not None else {}),
            },
        )
        _write_record(tmp / RECORD, result, gcfg)
    result.seconds, result.peak_rss = usage.seconds, usage.peak_rss
    _write_record(out / RECORD, result, gcfg)
    return result


def _device(gcfg: ExportGgufConfig) -> str:
    if gcfg.imatrix_device != "auto":
        return gcfg.imatrix_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _verification_text(gcfg: ExportGgufConfig) -> str:
    from .export_onnx import verification_text

    return verification_text(gcfg.verify_source, gcfg.verify_tokens)


def _write_record(path: Path, result: GgufResult, cfg: ExportGgufConfig) -> None:
    from ..manifest import library_versions

    record = asdict(result)
    record["out"] = str(result.out)
    record["config"] = cfg.model_dump(mode="json")
    record["converter"] = {"package": f"{CONVERTER.package}=={CONVERTER.version}", "script": "convert_hf_to_gguf.py"}
    record["versions"] = library_versions()
    path.write_text(json.dumps(record, indent=2))


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise MissingLibrary(
            f"the GGUF export needs llama-cpp-python ({err}); `make install` builds it (docs/gguf.md has the "
            "command for other machines)."
        ) from None
    return llama_cpp


# ------------------------------------------------------------------------------------------------------ pipeline


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's export_gguf: RUN_DIR/recovered (+ RUN_DIR/calib for the importance matrix) -> RUN_DIR/gguf."""
    out = ctx.out(STAGE)
    model = ctx.produced("recover")
    calib = ctx.recorded("calibrate")
    if cfg.export_gguf.imatrix and calib is None:
        raise StageNotReady(
            f"{ctx.run_dir}: export_gguf.imatrix needs the calibrate stage's samples; add calibrate to the config's "
            "stages or set export_gguf.imatrix: false."
        )

    def work() -> dict[str, Any]:
        result = run(cfg, model, out, calib if cfg.export_gguf.imatrix else None, True, ctx.progress, ctx.log_file)
        return {
            "files": {
                f.type: {"bytes": f.bytes, "bits_per_weight": f.bits_per_weight, **_shown(f.verification)}
                for f in result.files
            },
            "imatrix": result.imatrix is not None,
        }

    def describe(summary: dict[str, Any]) -> str:
        return ", ".join(
            f"{t} {human_bytes(v['bytes'])} ({v['bits_per_weight']:.2f} bpw)" for t, v in summary["files"].items()
        ) + ("" if summary["imatrix"] else ", no importance matrix")

    inputs = [model] + ([calib] if cfg.export_gguf.imatrix and calib is not None else [])
    return Step(
        STAGE.name,
        inputs,
        [out],
        {
            "model": cfg.model.model_dump(
                mode="json", include={"name", "chat_format", "license", "license_name", "license_link"}
            ),
            **cfg.export_gguf.model_dump(mode="json"),
        },
        work,
        describe,
    )


def _shown(verification: dict[str, Any]) -> dict[str, float]:
    return {k: verification[k] for k in ("top1_agreement", "kl_mean") if k in verification}
