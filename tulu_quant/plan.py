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

# A suite as work: (benchmark, sequences, prompt tokens, generated tokens) per sequence. Sequence counts come from the
# suite's sizes (None: the whole data set, DATASET_SIZES); prompt lengths are rough LLaMA-token counts of
# open-instruct's prompts (k-shot exemplars dominate, PROMPT_TOKENS); generated tokens are the suite's max_new_tokens,
# an upper bound (answers end earlier at EOS or a stop string), so a projection errs long.
PROMPT_TOKENS = {
    "MMLU 0-shot": 150,
    "MMLU 5-shot": 700,
    "GSM direct": 500,
    "GSM cot": 1000,
    "BBH direct": 600,
    "BBH cot": 1100,
    "TydiQA goldp": 500,
    "TydiQA closedbook": 150,
    "Codex-Eval": 150,
    "AlpacaFarm": 60,
}
# MMLU's 57 subjects / 14,042 test questions, BBH's 27 tasks, TydiQA-GoldP's 9 languages, HumanEval's 164 problems,
# AlpacaEval's 805 instructions; perplexity windows of one source when max_windows is None.
DATASET_SIZES = {"mmlu": 14042, "mmlu_subjects": 57, "bbh_tasks": 27, "tydiqa_languages": 9, "humaneval": 164}
DATASET_SIZES |= {"alpaca": 805, "windows": 200}


PROMPT_SHOTS = {"GSM": 8, "TydiQA": 1}  # the shots PROMPT_TOKENS counts (open-instruct's defaults)


def shots_tokens(job: str, shots: int) -> int:
    """PROMPT_TOKENS of `job` at another number of exemplars (each the size of the question itself)."""
    default = PROMPT_SHOTS[job.split()[0]]
    return round(PROMPT_TOKENS[job] * (1 + shots) / (1 + default))


def suite_work(suite, context: int) -> tuple[tuple[str, int, int, int], ...]:
    """The work of a SuiteConfig (tulu_quant.config) at perplexity windows of `context` tokens."""
    size = DATASET_SIZES
    work = []
    ppl = suite.perplexity
    windows = sum(ppl.source_windows.get(s, ppl.max_windows or size["windows"]) for s in ppl.sources)
    work.append(("perplexity + KL", windows, context, 0))
    m = suite.mmlu
    if m.enabled:
        questions = (m.per_subject * (m.subjects or size["mmlu_subjects"])) if m.per_subject else None
        questions = questions or round(size["mmlu"] * (m.subjects or size["mmlu_subjects"]) / size["mmlu_subjects"])
        work += [(f"MMLU {k}-shot", questions, PROMPT_TOKENS[f"MMLU {k}-shot"], 0) for k in m.shots]
    g, b, t = suite.gsm, suite.bbh, suite.tydiqa
    if g.enabled:
        work += [
            (f"GSM {mode}", g.examples or 1319, shots_tokens(f"GSM {mode}", g.shots), g.max_new_tokens)
            for mode in g.modes
        ]
    if b.enabled:
        examples = (b.tasks or size["bbh_tasks"]) * (b.per_task or 40)
        work += [(f"BBH {mode}", examples, PROMPT_TOKENS[f"BBH {mode}"], b.max_new_tokens) for mode in b.modes]
    if t.enabled:
        questions = size["tydiqa_languages"] * (t.per_language or 100)
        work += [
            (f"TydiQA {mode}", questions, shots_tokens(f"TydiQA {mode}", t.shots), t.max_new_tokens) for mode in t.modes
        ]
    c = suite.codex
    if c.enabled:
        work += [
            (
                f"Codex-Eval T={temp}",
                (c.problems or size["humaneval"]) * c.samples,
                PROMPT_TOKENS["Codex-Eval"],
                c.max_new_tokens,
            )
            for temp in c.temperatures.values()
        ]
    a = suite.alpaca
    if a.enabled:
        work.append(("AlpacaFarm", a.instructions or size["alpaca"], PROMPT_TOKENS["AlpacaFarm"], a.max_new_tokens))
    return tuple(work)


def full_suite_work() -> tuple[tuple[str, int, int, int], ...]:
    from .config import load_suite

    return suite_work(load_suite("full"), LLAMA1["13B"]["max_position_embeddings"])


def gpus_needed(weight_bytes: int, gpu: Gpu) -> int:
    """Tensor-parallel degree (a power of two) whose per-GPU weight share leaves half the usable memory for KV."""
    usable = gpu.memory * GPU_MEMORY_UTILIZATION - RUNTIME_BYTES
    n = 1
    while weight_bytes / n > usable / 2 and n < 64:
        n *= 2
    return n


def project_suite_seconds(shape: Shape, weight_bytes: int, gpu: Gpu, work=None) -> tuple[float, int]:
    """(projected seconds, tensor-parallel GPUs) of `work` on `n` GPUs of one kind: per benchmark, prefill at the
    compute roof plus decode at the bandwidth roof, with as many running sequences as the KV cache holds."""
    n = gpus_needed(weight_bytes, gpu)
    bandwidth = gpu.bandwidth * n * PROJECTION_EFFICIENCY["bandwidth"]
    flops = gpu.tflops * 1e12 * n * PROJECTION_EFFICIENCY["compute"]
    kv_room = gpu.memory * n * GPU_MEMORY_UTILIZATION - n * RUNTIME_BYTES - weight_bytes
    per_token = kv_cache_bytes(shape, 1)
    total = 0.0
    for _, sequences, prompt, new in work or full_suite_work():
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


# export_gguf's rates on a 2-core AMD EPYC with AVX512, measured by `make rehearse` at LLaMA-13B width (2 layers,
# gguf.json's timings): the converter wrote the 1.92 GB F16 GGUF in 5.3 s; the importance matrix's forward passes ran
# 8 x 512 tokens through 2 layers (2 x 317 M weights) in 38.2 s; the quantizer made Q4_K_M (with the matrix) and Q8_0
# from 962 M weights in 47.5 + 6.6 s on 2 threads. The stand-in's figures (135 M weights, docs/gguf.md) were 3-4x lower
# for the converter and the matrix, whose small matrices and Python start-up dominate there: plan projected the
# rehearsal's export at 1.6x its measured time with them.
GGUF_RATES = {
    "convert_bytes_per_s": 1.92e9 / 5.3,
    "quantize_params_per_s": 2 * 962.1e6 / (47.5 + 6.6),
    "imatrix_flops_per_s": 2 * 2 * 317.2e6 * 8 * 512 / 38.2,
}


def gguf_seconds(shape: Shape, types: list[str], samples: int, seq_len: int) -> dict[str, float]:
    """The GGUF export's converter, importance matrix (over samples x seq_len tokens) and quantizer, in seconds."""
    return {
        "convert": shape.params * 2 / GGUF_RATES["convert_bytes_per_s"],
        "imatrix": 2 * shape.layer_params * shape.layers * samples * seq_len / GGUF_RATES["imatrix_flops_per_s"],
        "quantize": len(types) * shape.params / GGUF_RATES["quantize_params_per_s"],
    }


def gguf_projection(shape: Shape, types: list[str], samples: int, seq_len: int) -> str:
    """Lines: the GGUF export's files, disk and time for this model, scaled from GGUF_RATES (a PROJECTION: the
    converter is disk-bound, the quantizer and the matrix compute-bound, on the CPU they were measured on)."""
    from .stages.export_gguf import FLOAT_TYPES, estimated_bytes, nominal_bits

    files = ", ".join(
        f"{t} ~{human_bytes(int(shape.params * (nominal_bits(t) + (0 if t in FLOAT_TYPES else 0.35)) / 8))}"
        for t in types
    )
    times = {k: human_seconds(v) for k, v in gguf_seconds(shape, types, samples, seq_len).items()}
    convert, quantize, imatrix = times["convert"], times["quantize"], times["imatrix"]
    return "\n".join(
        [
            f"\nGGUF export (export_gguf): {files}; up to {human_bytes(estimated_bytes(types, shape.params))} of disk "
            "while it runs (the temporary F16 GGUF included).",
            f"PROJECTION on a 2-core CPU like the one measured (docs/benchmarks.md): convert {convert}, "
            f"quantize {quantize}, importance matrix over {samples} x {seq_len} tokens "
            f"{imatrix} (float32; export_gguf.imatrix_device cuda runs it on a GPU instead).",
        ]
    )


# ------------------------------------------------------------------------------------------------------ stage time
# What each stage of `tulu-quant run` costs: the work it does (FLOPs, bytes), divided by a machine's rates. The CPU
# rates were measured on a 2-core AMD EPYC with AVX512-BF16: first on the stand-in (SmolLM2-135M, `python -m
# benchmarks.bench pipeline`), then corrected where `make rehearse` (LLaMA-13B widths, 2 layers, each stage in its own
# process) measured more than 25 % away (docs/benchmarks.md has both tables). A GPU changes the compute terms only:
# recovery, conversions and hashing stay on the host's disk and CPU.


@dataclass(frozen=True)
class Rates:
    name: str
    stream: float  # bytes/s a checkpoint is read, converted and written (recover: fp16 base + fp32 diff in, fp16 out)
    read: float  # bytes/s a file just written is read back (loaded or hashed from the page cache)
    train_flops: float  # AutoRound's tuning (forward + backward of one decoder layer), FLOP/s
    forward_flops: float  # scoring / prefill forward passes, FLOP/s
    bandwidth: float  # weight bytes/s streamed per generated token (decode at batch 1)
    kquant: float  # weights/s onnxruntime's k-quant packs (what the ONNX export quantizes itself: lm_head)
    gpu: bool = False
    cores: int = 2  # the machine's cores and memory: how many validate workers auto starts there
    memory: float = 24 * 2**30


CPU_RATES = Rates(
    "2-core CPU (AVX512-BF16)",
    # recover: 1.08 GB (269 MB base + 538 MB diff + 269 MB out) in 8.1 s, verification included (the rehearsal's
    # 5.8 GB in 64 s agrees: 0.92 of the projection).
    stream=133e6,
    # the rehearsal: validate loaded its 1.9 GB fp16 reference in about 2.7 s; publish hashed 3.8 GB in 3.7 s. (The
    # stream rate here made validate's loads and publish's hashing 10x too slow.)
    read=1.0e9,
    # the rehearsal: 41.9 TFLOP (2 layers x (2 iterations x 3 x 8 x 512 + 2 x 8 x 512) tokens x 2 P + 2 L d FLOP per
    # token) in 216 s less AUTOROUND_COMPILE_SECONDS. (The stand-in's 163e9, at 576 wide, made it 0.77 of plan.)
    train_flops=240e9,
    # the rehearsal: one 2048-token window through 2 layers and the 32001 x 5120 output matrix (3.3 TFLOP) in 22 s,
    # float32. (The stand-in's 278 windows/s at 576 wide gave 75e9, which made validate 4x too slow.)
    forward_flops=150e9,
    # decode: torch float32 17.1 tokens/s x 538 MB of float32 weights per token (CPU inference paths table).
    bandwidth=9.2e9,
    # the rehearsal: the 32001 x 5120 output matrix (164 M weights) k-quantized in 68 s (the stand-in's 28 M in about
    # 16 s gave 1.8e6).
    kquant=2.4e6,
)
STAGE_PROCESS_BYTES = 600 * 2**20  # Python + torch + the stage's libraries before any weights (calibrate: 576 MiB)
LIGHT_PROCESS_BYTES = 330 * 2**20  # a stage that imports no torch (publish: 328 MiB in the rehearsal)
CALIBRATE_SECONDS = 4.0  # loading the source text and the tokenizer, tokenizing a few hundred thousand tokens
AUTOROUND_COMPILE_SECONDS = 40.0  # AutoRound 0.16 torch.compiles its block on the first layer
# validate's worker processes (tulu_quant.eval.parallel), measured on the stand-in on 2 cores: a 512-token window takes
# 1.9 s in each of two one-thread workers against 1.2 s in one two-thread process (scoring throughput x1.26), and two
# one-thread workers each decode as fast as one two-thread process (decoding throughput x2).
PARALLEL_FORWARD_GAIN = 2 * 1.2 / 1.9
# neural-compressor's k-quant search holds about this many float32 copies of the matrix it packs (fit to the
# rehearsal's export_onnx peak, 9.32 GiB, which the verification phase's weights alone do not reach)
KQUANT_COPIES = 12


def gpu_rates(gpu: Gpu, cpu: Rates = CPU_RATES) -> Rates:
    """A GPU's compute at PROJECTION_EFFICIENCY of the vendor's figures; disk and host-side work at the CPU's rates."""
    flops = gpu.tflops * 1e12 * PROJECTION_EFFICIENCY["compute"]
    return Rates(
        gpu.name,
        cpu.stream,
        cpu.read,
        flops,
        flops,
        gpu.bandwidth * PROJECTION_EFFICIENCY["bandwidth"],
        cpu.kquant,
        gpu=True,
    )


def layer_flops_per_token(shape: Shape, seq_len: int) -> float:
    """Forward FLOPs of one decoder layer per token: 2 per weight, plus causal attention (QK^T and AV, 2 L d)."""
    return 2 * shape.layer_params + 2 * seq_len * shape.heads * shape.head_dim


def stage_projection(shape: Shape, cfg: RunConfig, rates: Rates = CPU_RATES, suite=None) -> dict[str, dict[str, float]]:
    """{stage: {seconds, rss_bytes}} for the stages of `cfg` on a machine with `rates` (rss_bytes: host memory of the
    stage run in its own process); `suite` replaces cfg's validation suite (a SuiteConfig, e.g. without what could not
    run offline). A PROJECTION: the terms name the work, the rates were measured on one CPU."""
    from .config import load_suite
    from .stages.export_gguf import nominal_bits

    P, d, V = shape.params, shape.hidden, shape.vocab
    computed = P - V * d  # the input embedding is a lookup, not a matmul
    largest = max(V * d, *(i * o for i, o in shape.linears().values())) * 4  # float32
    N, L = cfg.calibrate.num_samples, cfg.calibrate.seq_len
    q = cfg.quantize
    quant_bytes = quantized_weight_bytes(shape, q.bits, q.group_size)
    forward = lambda tokens: 2 * computed * tokens / rates.forward_flops  # noqa: E731
    decode = lambda tokens, weights: tokens * weights / rates.bandwidth  # noqa: E731
    out: dict[str, dict[str, float]] = {}

    # recover: stream base (fp16) + diff (fp32) in and fp16 out; --verify scores ~350 tokens, generates 8.
    verify = (forward(350) + decode(cfg.recover.verify_new_tokens, P * 4)) if cfg.recover.verify else 0.0
    out["recover"] = {"seconds": 8 * P / rates.stream + verify, "rss_bytes": STAGE_PROCESS_BYTES + 3 * largest}
    out["calibrate"] = {"seconds": CALIBRATE_SECONDS, "rss_bytes": STAGE_PROCESS_BYTES}

    # quantize: AutoRound tunes each layer for `iters` steps of forward + backward (3 forwards) on batch_size samples,
    # and runs all N samples through it twice (float and quantized outputs for the next layer); GPTQ runs the forward
    # passes once and solves each linear (in^3). Host memory: the model in float32, twice (AutoRound keeps the
    # original beside the copy it tunes), the cached layer inputs, one layer's tuning state.
    fpt = layer_flops_per_token(shape, L)
    if q.method == "autoround":
        tokens = q.autoround_iters * 3 * q.batch_size * L + 2 * N * L
        flops = shape.layers * tokens * fpt
        fixed = 0.0 if q.autoround_torch_compile is False else AUTOROUND_COMPILE_SECONDS
        rss = STAGE_PROCESS_BYTES + 2 * P * 4 + 2 * N * L * d * 4 + 4 * shape.layer_params * 4
    else:
        solve = sum(i**3 for i, _ in shape.linears().values())
        flops, fixed = shape.layers * (2 * N * L * fpt + 2 * solve), 0.0
        rss = STAGE_PROCESS_BYTES + P * 2 + quantize_peak(shape, N, L, 4)["activations"]
    seconds = fixed + flops / rates.train_flops + (P * 2 + quant_bytes) / rates.stream
    out["quantize"] = {"seconds": seconds, "rss_bytes": rss}

    # export_onnx: the builder reads the GPTQ checkpoint (or the fp16 model) and k-quantizes what is still float (the
    # output matrix); the verification loads the float32 reference and scores verify_tokens with both models. Peak
    # memory: the k-quant search over that matrix, or the verification's two models, whichever is larger.
    e = cfg.export_onnx
    kquant = V * d if e.precision == "int4" else 0
    onnx_bytes = quant_bytes if e.precision == "int4" else P * (2 if e.precision == "fp16" else 4)
    check = 2 * forward(e.verify_tokens) + decode(e.verify_new_tokens, P * 4) + P * 2 / rates.read if e.verify else 0
    search = onnx_bytes + KQUANT_COPIES * kquant * 4
    verifying = P * 4 + P * 2 + onnx_bytes if e.verify else 0
    out["export_onnx"] = {
        "seconds": (quant_bytes + onnx_bytes) / rates.stream + kquant / rates.kquant + check,
        "rss_bytes": STAGE_PROCESS_BYTES + max(search, verifying),
    }

    # export_gguf: convert to F16, the importance matrix's float32 forward passes, each type quantized and verified.
    g = cfg.export_gguf
    samples = min(N, g.imatrix_samples or N) if g.imatrix else 0
    gguf_bytes = [P * nominal_bits(t) / 8 for t in g.types]
    parts = gguf_seconds(shape, g.types, samples, L)
    if rates.gpu:  # export_gguf.imatrix_device auto: the matrix's forward passes run on the GPU
        parts["imatrix"] = 2 * shape.layer_params * shape.layers * samples * L / rates.forward_flops
    seconds = sum(parts.values())
    if g.verify:
        seconds += sum(forward(g.verify_tokens) + decode(g.verify_new_tokens, b) for b in gguf_bytes)
    out["export_gguf"] = {"seconds": seconds, "rss_bytes": STAGE_PROCESS_BYTES + 3 * largest + max(gguf_bytes)}

    # validate: every artifact scores the suite (its perplexity windows once: the KL windows' comparison with the
    # reference's cached logits is made in the same pass), prompts in forward passes, answers token by token. Peak
    # memory: the float32 reference while its fp16 weights are converted, and a batch of windows' logits.
    suite = suite or load_suite(cfg.validate_.suite)
    context = cfg.validate_.context_length or cfg.model.context_length or 2048
    work = suite_work(suite, context)
    scored = sum(n * prompt for _, n, prompt, _ in work)
    generated = sum(n * new for _, n, _, new in work)
    files = {"recover": P * 2, "quantize": quant_bytes, "export_onnx": onnx_bytes}
    weights = [P * 4 if stage == "recover" else b for stage, b in files.items() if stage in cfg.stages]
    files = [b for stage, b in files.items() if stage in cfg.stages]
    if "export_gguf" in cfg.stages:
        weights, files = weights + gguf_bytes, files + gguf_bytes
    windows = work[0][1] if work and work[0][0].startswith("perplexity") else 0
    logits = 2 * min(32, windows) * context * V * 4 if not rates.gpu else 0
    loading = P * 4 + P * 2 if "recover" in cfg.stages else max(weights, default=0)
    workers = validate_workers(cfg, [P * 2, *files[1:]] if "recover" in cfg.stages else [P * 2, *files], rates)
    gain = 1 + (PARALLEL_FORWARD_GAIN - 1) * (workers - 1)  # measured at 2; more is extrapolated
    scoring = sum(forward(scored) for _ in weights) / gain
    seconds = scoring + sum(decode(generated, b) for b in weights) / workers + sum(files) / rates.read
    worker = STAGE_PROCESS_BYTES + loading + logits  # each worker may hold the reference (one serial run: itself)
    rss = worker if workers == 1 else STAGE_PROCESS_BYTES + workers * worker
    out["validate"] = {"seconds": seconds, "rss_bytes": rss, "workers": workers}

    # publish: hard links where it can (no copy), and a sha256 of every file it ships.
    shipped = quant_bytes + (onnx_bytes if cfg.publish.include_onnx else 0)
    shipped += sum(gguf_bytes) if cfg.publish.include_gguf else 0
    out["publish"] = {"seconds": shipped / rates.read, "rss_bytes": LIGHT_PROCESS_BYTES}
    return {name: out[name] for name in cfg.stages if name in out}


def validate_workers(cfg: RunConfig, sizes: list[float], rates: Rates) -> int:
    """The validate workers auto (or the config) starts for artifacts of these sizes on the machine of `rates`."""
    from .eval.parallel import worker_count

    if rates.gpu:
        return 1
    v = cfg.validate_
    return worker_count(v.workers, [int(b) for b in sizes], rates.cores, int(0.9 * rates.memory), "cpu", v.engine)[0]


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
