"""`tulu-quant plan`: memory estimates from a model's config.json alone (no weights are read).

Quantizing (GPTQModel walks the decoder one layer at a time; what is resident at the peak, in bytes):

    layer       = P_layer * b                          # the layer being quantized, in the compute dtype (b bytes)
    embeddings  = V * d * b                            # embed_tokens runs on the device to capture layer 0's inputs
    activations = 2 * N * L * d * b                    # every sample's layer input, and its output for the next layer
    rotary      = 2 * N * L * head_dim * b             # each sample's cached rotary cos/sin (a layer-input kwarg)
    forward     = L * (3 f + 4 d) * 4 + h * L^2 * b    # one sample's transient MLP/attention buffers
    hessians    = sum_{linear in one step} in^2 * 4    # float32; a step is one true-sequential subset (q/k/v, o,
                                                       #   gate/up, down), or the whole layer without true_sequential
    solve       = (3 * out * in + in^2) * 4            # GPTQ on the largest linear: W, Q, the error, H^-1 in float32
    workspace   = WORKSPACE_BYTES                      # GPTQModel's thread pools, logs and packing buffers
    allocator   = ALLOCATOR_SLACK * (the sum above)    # blocks the allocator keeps after they are freed
    peak        = the sum of the above (+ the Python/torch/GPTQModel process on CPU, ~PROCESS_BYTES)

Measured on CPU (tests/unit/test_plan.py): a 2-layer model (hidden 512, head_dim 128) with 128 x 256 calibration tokens
peaked 193-297 MiB above the process's resting RSS over nine runs on three 2-core machines, against 284 MiB for the
tensors alone: the same work left a spread of 1.5x in resident memory, which is the allocator's (glibc arenas per worker
thread here; the CUDA caching allocator's fragmentation on GPUs), not the model's. The allocator term (20 %, the
overhead memory calculators such as accelerate's commonly add) brings the estimate to 340 MiB, above every measurement.
The activations term is an upper bound: all inputs and all outputs are resident together only while a layer's last
outputs are collected.

Serving the quantized model (transformers / vLLM, weights + KV cache):

    weights  = sum_linear [in * out * bits / 8  +  (in / g) * out * (2 + bits / 8)  +  in * 4]   # qweight, fp16 scales
               + (V * d * 2) * (1 if tied else 2) + norms                                        # + packed zeros, g_idx
    kv_cache = 2 * layers * kv_heads * head_dim * context * batch * 2                           # K and V in fp16
    total    = weights + kv_cache + RUNTIME_BYTES (CUDA context, kernels' workspace, logits)

The 13B estimate reproduces the published TheBloke/tulu-13B-GPTQ size (7.26 GB for 4-bit g128) within 1 %.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, parse_size
from .errors import MissingPath, UserValueError
from .progress import human_bytes, human_seconds

# LLaMA-1 shapes (Touvron et al. 2023, table 2) with Tulu's vocabulary (32000 + <pad>); untied embeddings.
LLAMA1 = {
    "7B": {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32},
    "13B": {"num_hidden_layers": 40, "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40},
    "30B": {"num_hidden_layers": 60, "hidden_size": 6656, "intermediate_size": 17920, "num_attention_heads": 52},
    "65B": {"num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 22016, "num_attention_heads": 64},
}
for _shape in LLAMA1.values():
    _shape.update(vocab_size=32001, tie_word_embeddings=False, max_position_embeddings=2048)

CONSUMER_GPUS = {"12 GB": 12 * 2**30, "16 GB": 16 * 2**30, "24 GB": 24 * 2**30}
RUNTIME_BYTES = 600 * 2**20  # CUDA context + cuBLAS/kernel workspace + logits; typical for one process on one GPU
PROCESS_BYTES = 1_500 * 2**20  # Python + torch + transformers + GPTQModel resident on CPU before any model is loaded
WORKSPACE_BYTES = 96 * 2**20  # GPTQModel's own working memory during quantize(): thread pools, logs, packing (CPU)
ALLOCATOR_SLACK = 0.2  # freed blocks an allocator keeps resident, as a fraction of the live tensors


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Shape:
        missing = [
            k
            for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
            if k not in config
        ]
        if missing:
            raise UserValueError(f"config.json lacks {', '.join(missing)}; plan needs a LLaMA-architecture config.")
        heads = config["num_attention_heads"]
        return cls(
            config["num_hidden_layers"],
            config["hidden_size"],
            config["intermediate_size"],
            heads,
            config.get("num_key_value_heads") or heads,
            config.get("head_dim") or config["hidden_size"] // heads,
            config["vocab_size"],
            bool(config.get("tie_word_embeddings", False)),
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear of one layer."""
        d, f, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (d, q),
            "k_proj": (d, kv),
            "v_proj": (d, kv),
            "o_proj": (q, d),
            "gate_proj": (d, f),
            "up_proj": (d, f),
            "down_proj": (f, d),
        }

    def steps(self, true_sequential: bool) -> list[list[str]]:
        if not true_sequential:
            return [list(self.linears())]
        return [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]

    @property
    def layer_params(self) -> int:
        return sum(i * o for i, o in self.linears().values()) + 2 * self.hidden

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_params + embeddings + self.hidden


# ------------------------------------------------------------------------------------------------------ estimates


def quantize_peak(
    shape: Shape, samples: int, seq_len: int, compute_bytes: int = 2, true_sequential: bool = True
) -> dict[str, int]:
    """Bytes resident on the quantizing device at GPTQModel's peak, by term (see the module docstring)."""
    linears = shape.linears()
    hessians = max(sum(linears[n][0] ** 2 * 4 for n in step) for step in shape.steps(true_sequential))
    fan_in, fan_out = max(linears.values(), key=lambda io: io[0] * io[1])
    terms = {
        "layer": shape.layer_params * compute_bytes,
        "embeddings": shape.vocab * shape.hidden * compute_bytes,
        "activations": 2 * samples * seq_len * shape.hidden * compute_bytes,
        "rotary": 2 * samples * seq_len * shape.head_dim * compute_bytes,
        "forward": seq_len * (3 * shape.intermediate + 4 * shape.hidden) * 4 + shape.heads * seq_len**2 * compute_bytes,
        "hessians": hessians,
        "solve": (3 * fan_out * fan_in + fan_in**2) * 4,
        "workspace": WORKSPACE_BYTES,
    }
    return {**terms, "allocator": int(ALLOCATOR_SLACK * sum(terms.values()))}


def quantized_weight_bytes(shape: Shape, bits: int = 4, group_size: int = 128) -> int:
    """Bytes of a GPTQ v1 checkpoint: packed codes, fp16 scales, packed zeros, g_idx, fp16 embeddings and norms."""
    per_layer = 0
    for fan_in, fan_out in shape.linears().values():
        groups = 1 if group_size == -1 else -(-fan_in // group_size)
        per_layer += fan_in * fan_out * bits // 8 + groups * fan_out * 2 + groups * fan_out * bits // 8 + fan_in * 4
    per_layer += 2 * shape.hidden * 2
    embeddings = shape.vocab * shape.hidden * 2 * (1 if shape.tied else 2)
    return shape.layers * per_layer + embeddings + shape.hidden * 2


def kv_cache_bytes(shape: Shape, context: int, batch: int = 1, dtype_bytes: int = 2) -> int:
    """K and V of every layer for `context` tokens of `batch` sequences (fp16 by default)."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * context * batch * dtype_bytes


def serve_bytes(shape: Shape, bits: int, group_size: int, context: int, batch: int) -> dict[str, int]:
    return {
        "weights": quantized_weight_bytes(shape, bits, group_size),
        "kv_cache": kv_cache_bytes(shape, context, batch),
        "runtime": RUNTIME_BYTES,
    }


@dataclass
class Plan:
    name: str
    shape: Shape
    quantize: dict[str, int]
    serve: dict[str, int]
    settings: dict[str, Any]

    @property
    def quantize_total(self) -> int:
        return sum(self.quantize.values())

    @property
    def serve_total(self) -> int:
        return sum(self.serve.values())


def make_plan(
    name: str,
    config: dict[str, Any],
    bits: int = 4,
    group_size: int = 128,
    samples: int = 128,
    seq_len: int = 2048,
    context: int | None = None,
    batch: int = 1,
    compute_bytes: int = 2,
) -> Plan:
    shape = Shape.from_config(config)
    context = context or config.get("max_position_embeddings") or seq_len
    settings = {
        "bits": bits,
        "group_size": group_size,
        "samples": samples,
        "seq_len": seq_len,
        "context": context,
        "batch": batch,
        "compute_bytes": compute_bytes,
    }
    return Plan(
        name,
        shape,
        quantize_peak(shape, samples, seq_len, compute_bytes),
        serve_bytes(shape, bits, group_size, context, batch),
        settings,
    )


def read_config(model: str) -> tuple[str, dict[str, Any]]:
    """A model directory's config.json, or a LLaMA-1 size name from the table (7B, 13B, 30B, 65B)."""
    if model.upper() in LLAMA1:
        return f"LLaMA-1 {model.upper()}", LLAMA1[model.upper()]
    path = Path(model).expanduser() / "config.json"
    if not path.is_file():
        raise MissingPath(f"{path}: missing; pass a model directory with config.json or one of {list(LLAMA1)}.")
    return str(Path(model)), json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------------ report


def fits(total: int, memory: int) -> str:
    return "yes" if total <= memory else "no"


def format_plan(plan: Plan, gpus: dict[str, int]) -> str:
    s = plan.settings
    lines = [
        f"{plan.name}: {plan.shape.params / 1e9:.2f} B parameters, {plan.shape.layers} layers, hidden "
        f"{plan.shape.hidden}, intermediate {plan.shape.intermediate}",
        f"quantize ({s['samples']} x {s['seq_len']} calibration tokens, {s['compute_bytes']}-byte compute): peak "
        f"{human_bytes(plan.quantize_total)} on the device (+ ~{human_bytes(PROCESS_BYTES)} process on CPU)",
        "  " + ", ".join(f"{k} {human_bytes(v)}" for k, v in plan.quantize.items()),
        f"serve {s['bits']}-bit g{s['group_size']} at context {s['context']} x batch {s['batch']}: "
        f"{human_bytes(plan.serve_total)}",
        "  " + ", ".join(f"{k} {human_bytes(v)}" for k, v in plan.serve.items()),
    ]
    lines.append(
        "  fits: "
        + ", ".join(
            f"{gpu} serve {fits(plan.serve_total, mem)} / quantize {fits(plan.quantize_total, mem)}"
            for gpu, mem in gpus.items()
        )
    )
    return "\n".join(lines)


def family_table(
    gpus: dict[str, int],
    bits: int = 4,
    group_size: int = 128,
    context: int = 2048,
    batch: int = 1,
    samples: int = 128,
    seq_len: int = 2048,
) -> str:
    """Markdown table: each LLaMA-1 size, its serving and quantizing memory, and which GPUs fit it."""
    head = [
        "model",
        f"{bits}-bit g{group_size} weights",
        "KV cache",
        "serve",
        "quantize peak",
        *[f"{gpu} serve/quantize" for gpu in gpus],
    ]
    rows = [head, ["---"] * len(head)]
    for name, config in LLAMA1.items():
        plan = make_plan(name, config, bits, group_size, samples, seq_len, context, batch)
        rows.append(
            [
                name,
                human_bytes(plan.serve["weights"]),
                human_bytes(plan.serve["kv_cache"]),
                human_bytes(plan.serve_total),
                human_bytes(plan.quantize_total),
                *[f"{fits(plan.serve_total, m)}/{fits(plan.quantize_total, m)}" for m in gpus.values()],
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# ------------------------------------------------------------------------------------------------------ suite time
# A projection of the full suite's time on vLLM (docs/serving.md says how, and why it is not a measurement).


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int  # bytes
    bandwidth: float  # bytes/s, the vendor's figure
    tflops: float  # dense fp16 tensor TFLOPS (fp32 accumulate), the vendor's figure


PROJECTION_GPUS = (
    Gpu("L4 24 GB", 24 * 2**30, 300e9, 121.0),
    Gpu("RTX 3090 24 GB", 24 * 2**30, 936e9, 71.0),
    Gpu("RTX 4090 24 GB", 24 * 2**30, 1008e9, 165.0),
    Gpu("A100 80 GB", 80 * 2**30, 2039e9, 312.0),
    Gpu("H100 SXM 80 GB", 80 * 2**30, 3350e9, 989.0),
)
# Assumed shares of the vendor's figures that vLLM reaches: decode reads weights + KV at ~60 % of the bandwidth,
# prefill runs at ~40 % of the tensor FLOPS. Assumptions, not measurements of ours (no GPU was available).
PROJECTION_EFFICIENCY = {"bandwidth": 0.6, "compute": 0.4}
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of the GPU it takes
MAX_RUNNING = 256  # vLLM's default --max-num-seqs

# The full suite (configs/eval/full.yaml) as work: (benchmark, sequences, prompt tokens, generated tokens) per
# sequence. Sequence counts are the suite's (MMLU's 14,042 test questions, GSM's 200, BBH's 27 tasks x 40, TydiQA's
# 9 languages x 100, HumanEval's 164 x 20 samples, AlpacaEval's 805); prompt lengths are
# rough LLaMA-token counts of open-instruct's prompts (k-shot exemplars dominate); generated tokens are the suite's
# max_new_tokens, an upper bound (answers end earlier at EOS or a stop string), so the projection errs long.
FULL_SUITE_WORK = (
    ("MMLU 0-shot", 14042, 150, 0),
    ("MMLU 5-shot", 14042, 700, 0),
    ("GSM direct", 200, 500, 512),
    ("GSM 8-shot CoT", 200, 1000, 512),
    ("BBH direct", 1080, 600, 512),
    ("BBH CoT", 1080, 1100, 512),
    ("TydiQA gold passage", 900, 500, 50),
    ("TydiQA closed book", 900, 150, 50),
    ("Codex-Eval T=0.1", 3280, 150, 512),
    ("Codex-Eval T=0.8", 3280, 150, 512),
    ("AlpacaFarm", 805, 60, 2048),
    ("perplexity + KL", 400, 2048, 0),
)


def gpus_needed(weight_bytes: int, gpu: Gpu) -> int:
    """Tensor-parallel degree (a power of two) whose per-GPU weight share leaves half the usable memory for KV."""
    usable = gpu.memory * GPU_MEMORY_UTILIZATION - RUNTIME_BYTES
    n = 1
    while weight_bytes / n > usable / 2 and n < 64:
        n *= 2
    return n


def project_suite_seconds(shape: Shape, weight_bytes: int, gpu: Gpu, work=FULL_SUITE_WORK) -> tuple[float, int]:
    """(projected seconds, tensor-parallel GPUs) of `work` on `n` GPUs of one kind: per benchmark, prefill at the
    compute roof plus decode at the bandwidth roof, with as many running sequences as the KV cache holds."""
    n = gpus_needed(weight_bytes, gpu)
    bandwidth = gpu.bandwidth * n * PROJECTION_EFFICIENCY["bandwidth"]
    flops = gpu.tflops * 1e12 * n * PROJECTION_EFFICIENCY["compute"]
    kv_room = gpu.memory * n * GPU_MEMORY_UTILIZATION - n * RUNTIME_BYTES - weight_bytes
    per_token = kv_cache_bytes(shape, 1)
    total = 0.0
    for _, sequences, prompt, new in work:
        total += sequences * (prompt + new) * 2 * shape.params / flops  # prefill (and, for new > 0, a bound on it)
        if new:
            batch = max(1, min(MAX_RUNNING, sequences, int(kv_room // (per_token * (prompt + new)))))
            step = (weight_bytes + batch * per_token * (prompt + new / 2)) / bandwidth
            total += -(-sequences // batch) * new * step
    return total, n


def suite_table(shape: Shape, bits: int, group_size: int) -> str:
    """Markdown: the projected full-suite hours on vLLM for the fp16 model and the quantized one, per GPU kind."""
    fp16 = shape.params * 2
    quant = serve_bytes(shape, bits, group_size, 1, 1)["weights"]
    rows = [
        f"| GPU | fp16 ({human_bytes(fp16)}) | {bits}-bit g{group_size} ({human_bytes(quant)}) |",
        "| --- | --- | --- |",
    ]
    for gpu in PROJECTION_GPUS:
        cells = []
        for weights in (fp16, quant):
            seconds, n = project_suite_seconds(shape, weights, gpu)
            cells.append(f"{seconds / 3600:.1f} h" + (f" on {n} GPUs (tensor parallel)" if n > 1 else ""))
        rows.append(f"| {gpu.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# export_gguf's rates, measured on the stand-in (135M parameters) on a 2-core AMD EPYC with AVX512 (docs/gguf.md):
# llama.cpp's converter wrote the 269 MB F16 GGUF in 9.2 s (Python start-up included), the quantizer made Q4_K_M in
# 3.8 s on 2 threads, the importance matrix's float32 forward passes ran 128 x 512 tokens through 30 layers in 173 s.
GGUF_RATES = {
    "convert_bytes_per_s": 269e6 / 9.2,
    "quantize_params_per_s": 134.5e6 / 3.8,
    "imatrix_flops_per_s": 2 * 106.9e6 * 128 * 512 / 173.0,
}


def gguf_projection(shape: Shape, types: list[str], samples: int, seq_len: int) -> str:
    """Lines: the GGUF export's files, disk and time for this model, scaled from GGUF_RATES (a PROJECTION: the
    converter is disk-bound, the quantizer and the matrix compute-bound, on the CPU they were measured on)."""
    from .stages.export_gguf import FLOAT_TYPES, estimated_bytes, nominal_bits

    files = ", ".join(
        f"{t} ~{human_bytes(int(shape.params * (nominal_bits(t) + (0 if t in FLOAT_TYPES else 0.35)) / 8))}"
        for t in types
    )
    convert = shape.params * 2 / GGUF_RATES["convert_bytes_per_s"]
    quantize = len(types) * shape.params / GGUF_RATES["quantize_params_per_s"]
    imatrix = 2 * shape.layer_params * shape.layers * samples * seq_len / GGUF_RATES["imatrix_flops_per_s"]
    return "\n".join(
        [
            f"\nGGUF export (export_gguf): {files}; up to {human_bytes(estimated_bytes(types, shape.params))} of disk "
            "while it runs (the temporary F16 GGUF included).",
            f"PROJECTION on a 2-core CPU like the one measured (docs/gguf.md): convert {human_seconds(convert)}, "
            f"quantize {human_seconds(quantize)}, importance matrix over {samples} x {seq_len} tokens "
            f"{human_seconds(imatrix)} (float32; export_gguf.imatrix_device cuda runs it on a GPU instead).",
        ]
    )


def gpu_list(extra: str | None) -> dict[str, int]:
    gpus = dict(CONSUMER_GPUS)
    if extra:
        gpus[f"{extra} (--gpu-mem)"] = parse_size(extra)
    return gpus


def run(model: str, cfg: RunConfig) -> str:
    """`tulu-quant plan`: the estimate for `model` (a folder or a LLaMA-1 size) with the bits and group size of
    cfg.quantize, the calibration size of cfg.calibrate and the serving context/batch of cfg.plan, then the LLaMA-1
    family table; returns the text to print."""
    bits, group = cfg.quantize.bits, cfg.quantize.group_size
    samples, seq_len = cfg.calibrate.num_samples, cfg.calibrate.seq_len
    gpus = gpu_list(cfg.plan.gpu_mem)
    name, config = read_config(model)
    estimate = make_plan(name, config, bits, group, samples, seq_len, cfg.plan.context, cfg.plan.batch)
    context = cfg.plan.context or LLAMA1["13B"]["max_position_embeddings"]
    return "\n".join(
        [
            format_plan(estimate, gpus),
            f"\nLLaMA-1 family (Tulu vocabulary), context {context}, batch {cfg.plan.batch}, calibration {samples} x "
            f"{seq_len}, fp16 compute on the GPU:",
            family_table(gpus, bits, group, context, cfg.plan.batch, samples, seq_len),
            f"\nThe full evaluation suite on vLLM for {name}: a PROJECTION from vendor bandwidth/FLOPS and assumed "
            "efficiencies, answers at their max_new_tokens (an upper bound), not a measurement (docs/serving.md):",
            suite_table(estimate.shape, bits, group),
            gguf_projection(estimate.shape, cfg.export_gguf.types, samples, seq_len),
        ]
    )
