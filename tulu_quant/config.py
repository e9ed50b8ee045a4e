"""Typed configuration: every setting of every stage and command, with its default, lives here and nowhere else.

A YAML file in ``configs/`` holds values only. ``load_config`` turns it into a ``RunConfig`` (with no file: every
default); an unknown key, a wrong type or a missing required value is one ``ConfigError`` naming the file and the key.
The CLI's flags and its generic ``--set key.path=value`` are dotted-key overrides on top, validated by the same models;
the flags take their type, choices and help from the fields here (``field_at``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from .errors import UserValueError
from .stages import ORDER as STAGE_ORDER

StageName = Literal[STAGE_ORDER]
Dtype = Literal["float16", "bfloat16", "float32"]
# How prompts are written: tulu (open-instruct's <|user|>/<|assistant|>), tokenizer (the model's own template), or auto:
# tulu unless the tokenizer ships another template (tulu_quant.chat.resolve_format).
ChatFormatChoice = Literal["auto", "tulu", "tokenizer"]
Device = Literal["auto", "cpu", "cuda"]
# The benchmark data sets a user may point at (tulu_quant.data.tasks.LAYOUT says where each is looked for).
DataName = Literal["mmlu_dev", "gsm8k", "gsm8k_exemplars", "bbh", "tydiqa", "alpaca_eval"]
# Semantic checks of `recover` that an expert may switch off (structural errors cannot be skipped: no output is
# possible).
RecoverCheck = Literal["keys", "config", "diff-scale", "finite", "verify"]


class ConfigError(UserValueError):
    """A configuration problem, phrased as one sentence that names the file/key and says what to do."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def parse_size(value: int | str) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    units = {
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "B": 1,
    }
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def _positive_size(value: int | str) -> int | str:
    if parse_size(value) <= 0:
        raise ValueError("must be a positive size such as 5GB or 24GiB")
    return value


# A size in bytes, or with a unit: 5GB, 500MB, 24GiB.
Size = Annotated[int | str, AfterValidator(_positive_size)]


def _positive_or_auto(value: int | str) -> int | str:
    if value != "auto" and value < 1:
        raise ValueError("must be a positive integer or auto")
    return value


# A count the code may choose: a positive integer, or auto.
CountOrAuto = Annotated[int | Literal["auto"], AfterValidator(_positive_or_auto)]


# ---------------------------------------------------------------------------------------------------------- the model


class ModelConfig(Strict):
    """Which model family member this run is about and where its inputs are."""

    name: str = Field("tulu-13b", description="Short name used in run directories and the model card.")
    base: Path | None = Field(None, description="Raw LLaMA weights in Hugging Face format (a directory).")
    diff: Path | None = Field(None, description="The Tulu weight diff (a directory, as published by AllenAI).")
    hub_base_model: str = Field("allenai/tulu-13b", description="Hub id of the model this run reproduces (model card).")
    context_length: int | None = Field(
        None, gt=0, description="Perplexity window length; None: the model's max_position_embeddings."
    )
    chat_format: ChatFormatChoice = Field(
        "auto",
        description="tulu: open-instruct's <|user|>/<|assistant|> format; tokenizer: the model's own template; auto: "
        "tulu unless the tokenizer ships another template.",
    )
    license: str = Field("other", description="SPDX id or 'other' for the model card's license field.")
    license_name: str = Field(
        "ai2-impact-license-low-risk", description="Model card license_name (when license: other)."
    )
    license_link: str | None = Field("https://allenai.org/impact-license", description="Model card license_link.")
    license_notes: list[str] = Field(
        default_factory=lambda: [
            "The base weights are Meta's LLaMA (version 1), released under its non-commercial research license: you "
            "need LLaMA access to use this model.",
            "The Tulu finetune is released by AI2 under the ImpACT license (low risk); it applies to this "
            "derivative too.",
        ],
        description="Sentences the model card states about the licenses the weights carry.",
    )

    @field_validator("base", "diff", mode="after")
    @classmethod
    def _expand(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None


# ---------------------------------------------------------------------------------------------------------- stand-in


class StandinConfig(Strict):
    """The offline stand-in: a real small LLaMA-architecture model turned into an open-instruct-style
    base + diff pair."""

    delta_scale: float = Field(
        0.01, gt=0, description="Relative size ||delta|| / ||W|| of the synthetic finetune delta."
    )
    seed: int = 0
    diff_shards: int = Field(
        3, ge=1, description="Number of float32 shards the diff is split into (exercises sharding)."
    )
    added_tokens: list[str] = Field(default_factory=lambda: ["<pad>"], min_length=1)
    max_ppl: float = Field(
        60.0,
        gt=1,
        description="The GGUF conversion fails above this perplexity on a built-in English text (it scores 18.5).",
    )


# ---------------------------------------------------------------------------------------------------------- recover


class RecoverConfig(Strict):
    dtype: Dtype = "float16"
    max_shard_size: Size = Field("5GB", description="Largest output shard, e.g. 5GB or 500MB.")
    skip_checks: list[RecoverCheck] = Field(default_factory=list, description="Expert overrides of semantic checks.")
    # Measured (docs/benchmarks.md): finetune diffs sit near 0.01; a full model passed as the diff gives ~1, swapped
    # arguments give >> 1. 0.5 separates them with a wide margin on both sides.
    diff_scale_threshold: float = Field(0.5, gt=0, description="Median per-tensor ||diff||/||base|| above this fails.")
    verify: bool = Field(False, description="Score a built-in English text with the result and greedily generate.")
    verify_max_ppl: float | None = Field(
        None,
        gt=1,
        description="--verify fails above this perplexity; None: 4x what a working model of its size scores "
        "on the built-in text (tulu_quant.layerwise_verify.perplexity_limit).",
    )
    verify_new_tokens: int = Field(8, ge=0)


# ---------------------------------------------------------------------------------------------------------- calibrate


def split_pair(value: str) -> tuple[str, str]:
    """'SOURCE:SPLIT' -> (source, split); the split is after the last ':' (file:PATH sources contain one too)."""
    source, _, split = value.rpartition(":")
    return source, split


def _check_pair(value: str) -> str:
    source, split = split_pair(value)
    if not source or not split:
        raise ValueError(f"'{value}' is not SOURCE:SPLIT, e.g. wiki:calibration")
    return value


# A data source's split written as SOURCE:SPLIT, e.g. wiki:evaluation.
Pair = Annotated[str, AfterValidator(_check_pair)]


class SourceWeight(Strict):
    CLI_FORM: ClassVar[str] = "NAME[@SPLIT][=WEIGHT]"
    source: str = Field(
        description="A name from tulu_quant.data's registry, e.g. wiki, shakespeare, tulu-sft, file:PATH."
    )
    weight: float = Field(1.0, gt=0, description="Share of the samples, relative to the other sources of the mix.")
    split: str = Field("calibration", description="Which split of the source to draw from.")

    @classmethod
    def parse(cls, spec: str) -> dict[str, Any]:
        """NAME[@SPLIT][=WEIGHT] (the CLI's --source) -> its fields; a file path may contain ':' and '=' too."""
        data: dict[str, Any] = {}
        name, sep, weight = spec.rpartition("=")
        if sep and weight.replace(".", "", 1).isdigit():
            data["weight"], spec = float(weight), name
        name, sep, split = spec.rpartition("@")
        if sep:
            data["split"], spec = split, name
        return {"source": spec, **data}


class CalibrateConfig(Strict):
    """N samples of L tokens for GPTQ: each source's documents (chat conversations rendered in the run's chat format)
    are joined and cut into L-token windows; each source contributes round(N * weight / total weight) of them, drawn
    without replacement by the seed."""

    mix: list[SourceWeight] = Field(
        default_factory=lambda: [SourceWeight(source="wiki")],
        min_length=1,
        description="The data sources and their shares (default: wiki's calibration split).",
    )
    num_samples: int = Field(128, gt=0, description="N: calibration samples (GPTQ paper and TheBloke: 128).")
    seq_len: int = Field(
        2048,
        gt=1,
        description="L: tokens per sample (LLaMA-1's context, 2048, for Tulu). Left at its default, it is clamped to a "
        "shorter model context; set explicitly, a value beyond the context is an error.",
    )
    seed: int = 0
    evaluation: list[Pair] | None = Field(
        None,
        description="SOURCE:SPLIT material the calibration set must not overlap; None: the validate suite's "
        "perplexity sources.",
    )

    @property
    def splits(self) -> list[tuple[str, str]]:
        """(source, split) of every mix entry: what validation must never score."""
        return [(s.source, s.split) for s in self.mix]

    @model_validator(mode="after")
    def _unique(self) -> CalibrateConfig:
        pairs = self.splits
        if len(set(pairs)) != len(pairs):
            raise ValueError("each (source, split) may appear once in mix; merge the duplicates' weights")
        return self


# ---------------------------------------------------------------------------------------------------------- quantize


# The group sizes GPTQModel 7.6 accepts (its QuantizeConfig and every GPTQ kernel reject others).
GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)


class QuantizeConfig(Strict):
    """GPTQ through GPTQModel 7.6 (tulu_quant/stages/quantize.py; measurements in docs/quantization.md). The defaults
    are the widely published Tulu 13B setting (TheBloke main: 4 bits, group 128, damp 0.01, no act order, symmetric,
    true sequential) plus GPTQModel's group-aware reordering, which keeps that checkpoint layout."""

    variant: str | None = Field(None, description="A name from configs/variants/ whose settings are applied first.")
    method: Literal["gptq", "autoround"] = Field(
        "gptq",
        description="gptq: GPTQModel's GPTQ. autoround: Intel's AutoRound (sign-gradient tuning of each block's "
        "rounding and clipping), written in the same GPTQ v1 format; several times slower (docs/quantization.md).",
    )
    autoround_iters: int = Field(
        200, gt=0, description="AutoRound's tuning steps per decoder layer (its default 200; 50 is its light recipe)."
    )
    autoround_torch_compile: bool | None = Field(
        None,
        description="Whether AutoRound compiles its block tuning with torch.compile. None: AutoRound's own choice (on "
        "where it supports it). Compiling costs tens of seconds per run before the first layer; it pays off on large "
        "models on CUDA (docs/quantization.md has the CPU measurement).",
    )
    bits: Literal[2, 3, 4, 8] = 4
    group_size: int = Field(128, description=f"One of {GROUP_SIZES}: -1 is one scale per output channel.")
    desc_act: bool = Field(
        False,
        description="Act order: quantize columns in order of decreasing Hessian diagonal "
        "(the checkpoint then carries a permuted g_idx, slower in some kernels).",
    )
    sym: bool = Field(True, description="Symmetric grid (false: a zero point per group, asymmetric).")
    damp_percent: float = Field(
        0.01, gt=0, lt=1, description="Dampening added to the Hessian diagonal, as a fraction of its mean."
    )
    true_sequential: bool = Field(
        True,
        description="Quantize a layer's linears in forward order (q/k/v, o, gate/up, "
        "down), each seeing the already-quantized ones' outputs.",
    )
    act_group_aware: bool | None = Field(
        None,
        description="GPTQModel's group-aware reordering (GAR): process groups "
        "and the columns inside each group by Hessian importance; g_idx stays "
        "sequential, so every kernel loads the result. None: on unless desc_act is "
        "true or group_size is -1 (it needs neither).",
    )
    static_groups: bool = Field(
        False,
        description="Fix every group's scale and zero from the original weights before "
        "GPTQ updates them (instead of when the group is reached).",
    )
    mse: float = Field(
        0.0,
        ge=0,
        description="0: each group's grid spans its min..max; > 0: search a shrunk range that "
        "minimises the |error|^mse norm (GPTQ's --mse uses 2.4).",
    )
    gptaq_alpha: float = Field(
        0.0,
        ge=0,
        description="GPTAQ (asymmetric calibration): also fit the full-precision "
        "model's layer inputs, weighted by alpha (0 off; 0.25 as its authors recommend). "
        "Runs each layer twice (quantized and full-precision inputs).",
    )
    foem_beta: float = Field(
        0.0,
        ge=0,
        description="FOEM: first-order error compensation weight (0 off; 0.1-0.25 "
        "recommended); combines with gptaq_alpha.",
    )
    compute_dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto",
        description="dtype of the calibration forward passes. auto: the model's float16/bfloat16 on cuda; on cpu "
        "bfloat16 where the CPU has native BF16 (AVX512-BF16, AMX), else float32 (tulu_quant.hardware: emulated "
        "bfloat16 matmuls are tens of times slower, a layer several times).",
    )
    offload_to_disk: bool = Field(
        True,
        description="GPTQModel moves finished layers to a temporary folder (saves RAM on "
        "13B+; costs a few seconds on small models).",
    )
    batch_size: int = Field(1, gt=0, description="Calibration samples per forward pass (more: faster, more memory).")
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")

    @field_validator("group_size", mode="after")
    @classmethod
    def _group(cls, value: int) -> int:
        if value not in GROUP_SIZES:
            raise ValueError(f"must be one of {list(GROUP_SIZES)} (what GPTQModel 7.6 accepts)")
        return value

    @property
    def group_aware(self) -> bool:
        """act_group_aware resolved: explicit value, else on unless act order or per-channel scales."""
        if self.act_group_aware is not None:
            return self.act_group_aware
        return not self.desc_act and self.group_size != -1

    @model_validator(mode="after")
    def _combinations(self) -> QuantizeConfig:
        if self.method == "autoround":
            gptq_only = {
                "desc_act": self.desc_act,
                "static_groups": self.static_groups,
                "mse": self.mse,
                "gptaq_alpha": self.gptaq_alpha,
                "foem_beta": self.foem_beta,
            }
            for key, value in gptq_only.items():
                if value:
                    raise ValueError(
                        f"{key} is a GPTQ setting and method is autoround, which tunes rounding and clipping itself; "
                        f"remove {key} or set method: gptq"
                    )
        elif self.autoround_torch_compile is not None:
            raise ValueError(
                "autoround_torch_compile is an AutoRound setting and method is gptq; remove it or set method: autoround"
            )
        if self.desc_act and self.act_group_aware:
            raise ValueError("desc_act and act_group_aware are two column orders and exclude each other; set one false")
        if self.act_group_aware and self.group_size == -1:
            raise ValueError(
                "act_group_aware reorders groups and needs group_size > 0; set act_group_aware: false for group_size -1"
            )
        return self


# ---------------------------------------------------------------------------------------------------------- validate


class Gate(Strict):
    """One pass/fail rule on a candidate's metric. Accuracies are in points (0-100), perplexities as they are."""

    metric: str = Field(
        description="A metric key of report.json (kl_mean, mmlu_0shot, ppl.wiki); * matches any text, "
        "so ppl.* gates every perplexity source."
    )
    max_increase: float | None = Field(None, description="candidate - reference may not exceed this (metric units).")
    max_increase_pct: float | None = Field(None, description="(candidate / reference - 1) * 100 may not exceed this.")
    max_drop: float | None = Field(None, description="reference - candidate may not exceed this (metric units).")
    max_value: float | None = Field(None, description="the candidate's value may not exceed this.")
    min_value: float | None = Field(None, description="the candidate's value may not fall below this.")
    outside_noise_only: bool = Field(True, description="A change whose paired 95% interval contains 0 does not fail.")

    @model_validator(mode="after")
    def _has_rule(self) -> Gate:
        rules = (self.max_increase, self.max_increase_pct, self.max_drop, self.max_value, self.min_value)
        if all(rule is None for rule in rules):
            raise ValueError("a gate needs one of max_increase, max_increase_pct, max_drop, max_value, min_value")
        return self


def _default_gates() -> list[Gate]:
    # The examples for Tulu 13B: perplexity may rise by 3 % at most, MMLU may drop by 1 point at most (a drop
    # inside the noise of the paired comparison does not fail).
    return [
        Gate(metric="ppl.*", max_increase_pct=3.0, outside_noise_only=False),
        Gate(metric="mmlu_0shot", max_drop=1.0),
    ]


class ValidateConfig(Strict):
    suite: str = Field("quick", description="A file name in configs/eval/ (without .yaml) or a path to a suite YAML.")
    context_length: int | None = Field(
        None,
        gt=1,
        description="Perplexity window length; None: model.context_length, else the model's max_position_embeddings.",
    )
    chat_format: ChatFormatChoice = Field(
        "auto",
        description="Prompt format of the benchmarks; auto: model.chat_format (itself auto: tulu unless the "
        "tokenizer ships another template).",
    )
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")
    calibration: list[Pair] = Field(
        default_factory=list,
        description="SOURCE:SPLIT material the artifacts were calibrated on, never scored (on top of calibrate.mix).",
    )
    data_dir: Path | None = Field(
        None,
        description="A folder of benchmark data sets laid out as docs/protocol.md says; None: TULU_QUANT_DATA, else "
        "the cache's data/.",
    )
    data: dict[DataName, Path] = Field(
        default_factory=dict,
        description="A data set's own path, which wins over data_dir: mmlu_dev, gsm8k, gsm8k_exemplars, bbh, tydiqa, "
        "alpaca_eval (CLI: --data NAME=PATH).",
    )
    gates: list[Gate] = Field(default_factory=_default_gates)
    judge_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (base URL, e.g. http://host:8000/v1) for "
        "AlpacaFarm-style pairwise judging; None: judge-free agreement only.",
    )
    judge_model: str | None = Field(None, description="Model name sent to the judge endpoint.")
    judge_api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the judge's API key (sent as a Bearer token when set).",
    )
    judge_timeout_s: float = Field(60.0, gt=0)
    engine: Literal["native", "vllm"] = Field(
        "native",
        description="What scores perplexity and runs the generative benchmarks: native (each artifact's own "
        "backend: transformers, GPTQModel, onnxruntime-genai) or vllm (a vLLM server, started by the run from "
        "vllm_venv or given in endpoints). KL divergence and MMLU stay native (they need full logits), and so does "
        "an artifact vLLM cannot load (ONNX, asymmetric GPTQ; the report says which ran where).",
    )
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="ARTIFACT=URL: an OpenAI-compatible server (base URL, e.g. http://host:8000/v1) already serving "
        "that artifact, used instead of starting one (ARTIFACT: its folder name as in the report, 'reference' or "
        "'candidate', the only candidate; CLI: --endpoint [ARTIFACT=]URL, a bare URL meaning the candidate).",
    )
    vllm_venv: Path = Field(Path(".venv-vllm"), description="The environment `make vllm` builds the server in.")
    vllm_kv_cache_gib: int = Field(4, gt=0, description="KV cache of a vLLM server on a CPU (VLLM_CPU_KVCACHE_SPACE).")
    workers: CountOrAuto = Field(
        "auto",
        description="Artifacts scored at the same time on a CPU, each in a process of its own with a share of the "
        "cores (tulu_quant.eval.parallel). auto: one per core while the models fit in memory together; 1 on CUDA, "
        "with vLLM, or for a model that does not fit twice. Scores match a serial run's up to float rounding (a thread "
        "count changes the order of a sum).",
    )

    @model_validator(mode="after")
    def _judge(self) -> ValidateConfig:
        if self.judge_url and not self.judge_model:
            raise ValueError("judge_url needs judge_model (the model name the endpoint serves)")
        return self


# Evaluation suites (configs/eval/*.yaml). Sizes are numbers of scored items; None means all of them. The defaults are
# the open-instruct settings behind Tulu's published table (the `full` suite).


class PerplexitySuite(Strict):
    sources: list[str] = Field(default_factory=lambda: ["wiki", "shakespeare"], description="tulu_quant.data sources.")
    split: str = Field("evaluation", description="Never the calibration split: validate checks disjointness.")
    max_windows: int | None = Field(None, gt=0, description="The first N windows of each source (None: all).")
    source_windows: dict[str, int] = Field(
        default_factory=dict, description="Per-source override of max_windows, e.g. {shakespeare: 8}."
    )
    kl_windows: int = Field(
        16,
        ge=0,
        description="Windows of the first source scored against the reference's logits "
        "(KL divergence); the reference's log-probabilities are kept on disk in float16.",
    )

    @model_validator(mode="after")
    def _known_sources(self) -> PerplexitySuite:
        unknown = sorted(set(self.source_windows) - set(self.sources))
        if unknown:
            raise ValueError(f"source_windows names {unknown}, which are not in sources {self.sources}")
        return self


class ProtocolConfig(Strict):
    """The evaluation protocol a report states and follows. open-instruct-2023-06: allenai/open-instruct's evaluation at
    commit e44fcf5 (2023-06-09), which produced Tulu v1's published table (docs/protocol.md lists every setting)."""

    name: Literal["open-instruct-2023-06"] = "open-instruct-2023-06"
    bos: Literal["as-protocol", "always", "never"] = Field(
        "as-protocol",
        description="BOS before a prompt. as-protocol: none (the June 2023 scripts tokenized prompts with "
        "add_special_tokens=False, which open-instruct later called a bug) except AlpacaFarm's, whose script added it.",
    )
    sample_seed: int = Field(
        42, description="random.seed of open-instruct's draws: GSM's 200 questions, BBH's 40 per task, TydiQA's 100."
    )


class MmluSuite(Strict):
    enabled: bool = True
    shots: list[Literal[0, 5]] = Field(default_factory=lambda: [0, 5])
    subjects: int | None = Field(None, gt=0, description="Subjects drawn by the suite seed (None: all 57).")
    per_subject: int | None = Field(None, gt=0, description="Test questions per subject drawn by the seed (None: all).")
    max_prompt_tokens: int = Field(
        2048, gt=0, description="Fewer shots are used while a prompt (before the chat format) is longer."
    )


class GsmSuite(Strict):
    enabled: bool = True
    modes: list[Literal["direct", "cot"]] = Field(default_factory=lambda: ["direct", "cot"])
    examples: int | None = Field(200, gt=0, description="Test questions drawn by protocol.sample_seed (None: 1,319).")
    shots: int = Field(8, ge=0, le=8, description="Wei et al.'s chain-of-thought exemplars shown (open-instruct: 8).")
    max_new_tokens: int = Field(512, gt=0)


class BbhSuite(Strict):
    enabled: bool = True
    modes: list[Literal["direct", "cot"]] = Field(default_factory=lambda: ["direct", "cot"])
    tasks: int | None = Field(None, gt=0, description="Tasks drawn by the suite seed (None: all 27).")
    per_task: int | None = Field(40, gt=0, description="Examples per task drawn by protocol.sample_seed.")
    max_new_tokens: int = Field(512, gt=0)


class TydiqaSuite(Strict):
    enabled: bool = True
    modes: list[Literal["goldp", "closedbook"]] = Field(default_factory=lambda: ["goldp", "closedbook"])
    per_language: int | None = Field(100, gt=0, description="Questions per language drawn by protocol.sample_seed.")
    shots: int = Field(1, ge=0)
    max_context_tokens: int = Field(512, gt=0, description="Passages are cut to this many tokens.")
    max_new_tokens: int = Field(50, gt=0)


class CodexSuite(Strict):
    enabled: bool = True
    problems: int | None = Field(None, gt=0, description="HumanEval problems drawn by the suite seed (None: all 164).")
    samples: int = Field(20, gt=0, description="Samples per problem and temperature (the unbiased pass@k's n).")
    temperatures: dict[int, float] = Field(
        default_factory=lambda: {1: 0.1, 10: 0.8},
        description="k of each pass@k reported -> the sampling temperature of the run it is estimated from.",
    )
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(512, gt=0)
    chat_format: bool = Field(False, description="open-instruct's jobs for Tulu's table ran Codex without it.")
    timeout_s: float = Field(3.0, gt=0, description="Wall-clock limit per test program (CPU limit likewise).")
    memory_mb: int = Field(1024, gt=0, description="Address-space limit per test program.")
    workers: int = Field(2, gt=0, description="Test programs run at once.")

    @model_validator(mode="after")
    def _samples(self) -> CodexSuite:
        if self.temperatures and self.samples < max(self.temperatures):
            raise ValueError(
                f"samples ({self.samples}) must be at least the largest k in temperatures ({max(self.temperatures)})"
            )
        return self


class AlpacaSuite(Strict):
    enabled: bool = True
    instructions: int | None = Field(None, gt=0, description="AlpacaEval instructions drawn by the seed (None: 805).")
    max_new_tokens: int = Field(2048, gt=0)


class SuiteConfig(Strict):
    """An evaluation suite: which benchmarks, on how many items, drawn by which seed, under which protocol."""

    description: str = ""
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    seed: int = Field(
        0, description="Draws the quick suites' subsets, so runs with the same suite compare item by item."
    )
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for bootstrap intervals of paired deltas.")
    batch_size: CountOrAuto = Field(
        "auto",
        description="Sequences per forward pass when scoring and generating (sorted by length). auto: as many as fit "
        "in half the free memory, up to 32. Greedy results do not depend on it; Codex's sampled ones are seeded per "
        "batch, so it is part of their cache key.",
    )
    perplexity: PerplexitySuite = Field(default_factory=PerplexitySuite)
    mmlu: MmluSuite = Field(default_factory=MmluSuite)
    gsm: GsmSuite = Field(default_factory=GsmSuite)
    bbh: BbhSuite = Field(default_factory=BbhSuite)
    tydiqa: TydiqaSuite = Field(default_factory=TydiqaSuite)
    codex: CodexSuite = Field(default_factory=CodexSuite)
    alpaca: AlpacaSuite = Field(default_factory=AlpacaSuite)


def load_suite(name: str) -> SuiteConfig:
    """configs/eval/NAME.yaml, or a path to a suite YAML."""
    path = Path(name).expanduser() if name.endswith((".yaml", ".yml")) else CONFIGS_DIR / "eval" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / "eval").glob("*.yaml"))
        raise ConfigError(f"validate.suite: unknown suite '{name}'; choose one of {known} or pass a YAML path.")
    return build(SuiteConfig, read_yaml(path), str(path))


# ---------------------------------------------------------------------------------------------------------- export


class ExportOnnxConfig(Strict):
    """onnxruntime-genai model builder export (tulu_quant/stages/export_onnx.py; measurements in docs/onnx.md)."""

    precision: Literal["int4", "fp16", "fp32"] = "int4"
    target: Literal["cpu", "cuda", "dml", "webgpu"] = "cpu"
    from_gptq: bool = Field(
        True, description="int4 from our GPTQ checkpoint (keeps its weights) instead of RTN/k-quant."
    )
    # The quantizer settings below apply to int4 from the fp16 model. From a GPTQ checkpoint its layers keep their own
    # groups, zero points and scales; the settings then reach only what GPTQ left in float (see lm_head), and
    # accuracy_level every MatMulNBits.
    block_size: Literal[16, 32, 64, 128, 256] = Field(32, description="int4 block size (weights sharing one scale).")
    # Measured on the stand-in (docs/onnx.md): asymmetric RTN matches k-quant; symmetric RTN is clearly worse.
    symmetric: bool = Field(
        False,
        description="rtn only: int4 without zero points (false: uint4 with a zero point per "
        "block); k_quant always stores zero points.",
    )
    accuracy_level: int | None = Field(
        None,
        ge=0,
        le=4,
        description="MatMulNBits compute type: 4 int8, 3 bf16, 2 fp16, 1 fp32, 0 unset; None: 4 on cpu and webgpu "
        "(int8 compute decodes 20x faster than fp32 compute even on an AVX2-only CPU, docs/onnx.md), the builder's "
        "default elsewhere.",
    )
    algorithm: Literal["rtn", "k_quant"] = Field(
        "k_quant",
        description="Weight-only quantizer: rtn (round to nearest) or k_quant (llama.cpp-style scale search).",
    )
    # int4 lm_head costs the stand-in +16 % perplexity over int8 for 15 MB less (docs/onnx.md).
    lm_head: Literal["int4", "int8", "float"] = Field(
        "int8",
        description="The output projection (and embeddings tied "
        "to it), which GPTQ leaves in float: int4 like the rest, int8, or "
        "float (fp32 on cpu).",
    )
    verify: bool = Field(True, description="Compare the export with the torch model and generate (cpu target only).")
    verify_source: str = Field("wiki", description="tulu_quant.data source whose evaluation text is scored.")
    verify_tokens: int = Field(512, ge=16, description="Tokens of that text scored by both models (one window).")
    verify_new_tokens: int = Field(16, ge=1, description="Greedy tokens the verification generates.")
    verify_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the float32 torch reference runs.")
    # Measured on the stand-in (docs/onnx.md): max |logit difference| / max |reference logit| = 2.7e-6 for fp32.
    fp32_tolerance: float = Field(
        1e-4, gt=0, description="fp32 exports fail above this max |delta logit| / max |logit|."
    )
    fp16_tolerance: float = Field(2e-2, gt=0, description="The same bound for fp16 exports (when they can run).")
    min_top1_agreement: float = Field(
        50.0,
        ge=0,
        le=100,
        description="int4 exports fail below this top-1 agreement "
        "(percent) with the fp16 model: catches a broken export, not a weak quantizer.",
    )
    threads: int | None = Field(
        None, gt=0, description="onnxruntime intra-op threads for verification (None: all cores)."
    )


# llama.cpp's quantization types (llama.h's LLAMA_FTYPE_MOSTLY_*), the ones users ask for first: K-quants (Q4_K_M is
# the usual default), the legacy block-32 types every runtime reads (Q4_0 for the oldest), and the float types.
GgufType = Literal[
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS", "F16", "BF16", "F32",
]  # fmt: skip


class ExportGgufConfig(Strict):
    """GGUF for llama.cpp (tulu_quant/stages/export_gguf.py; measurements in docs/gguf.md)."""

    types: list[GgufType] = Field(
        default_factory=lambda: ["Q4_K_M"],
        min_length=1,
        description="One GGUF file per type, named MODEL-TYPE.gguf (llama.cpp's own quantizer).",
    )
    source_type: Literal["f16", "bf16", "f32"] = Field(
        "f16", description="The full-precision GGUF llama.cpp's converter writes first and the quantizer reads."
    )
    # Measured on the stand-in (docs/gguf.md): Q4_K_M with our matrix against Q4_K_M without it.
    imatrix: bool = Field(
        True,
        description="Weight the quantizer's rounding by each input channel's mean squared activation on the "
        "calibration samples (llama.cpp's importance matrix), also written as imatrix.gguf.",
    )
    imatrix_samples: int | None = Field(
        None, gt=0, description="Calibration samples the matrix is computed from (None: all of calib/)."
    )
    imatrix_batch: int = Field(8, gt=0, description="Calibration samples per forward pass while computing it.")
    imatrix_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the matrix's forward passes run (one decoder layer in memory at a time)."
    )
    threads: int | None = Field(
        None, gt=0, description="llama.cpp threads for quantizing and verifying (None: every core this process has)."
    )
    verify: bool = Field(True, description="Score each file against the fp16 model (layer by layer) and generate.")
    verify_source: str = Field("wiki", description="tulu_quant.data source whose evaluation text is scored.")
    verify_tokens: int = Field(512, ge=16, description="Tokens of that text scored by both models (one window).")
    verify_new_tokens: int = Field(16, ge=1, description="Greedy tokens the verification generates.")
    min_top1_agreement: float = Field(
        50.0,
        ge=0,
        le=100,
        description="A file fails below this top-1 agreement (percent) with the fp16 model: catches a broken "
        "conversion, not a weak type.",
    )

    @field_validator("types")
    @classmethod
    def _unique(cls, types: list[str]) -> list[str]:
        if len(set(types)) != len(types):
            raise ValueError(f"lists a type twice: {types}")
        return types


# ---------------------------------------------------------------------------------------------------------- publish


class PublishConfig(Strict):
    repo_id: str | None = Field(None, description="Hub repository, e.g. you/tulu-13b-GPTQ; needed for --push.")
    revision: str | None = Field(None, description="Branch to push to; defaults to the variant name, else main.")
    push: bool = Field(
        False, description="Upload with huggingface_hub; otherwise a dry run lists what would be uploaded."
    )
    private: bool = False
    include_onnx: bool = Field(True, description="Put the run's ONNX export under onnx/ in the published folder.")
    include_gguf: bool = Field(True, description="Put the run's GGUF files under gguf/ in the published folder.")
    commit_message: str = "Upload {name} ({variant}) made with tulu-quant"

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        """The Hub's naming rule (huggingface_hub's own check), applied here so a dry run catches a bad id too."""
        if value is None:
            return value
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a Hub repository id ({str(err).split(': ')[0]})") from None
        return value


# ---------------------------------------------------------------------------------------------------------- demo


class GenerationSettings(Strict):
    """How a backend generates one answer (every backend applies these the same way)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, ge=1, description="CTRL's penalty on tokens already seen (1: off).")
    seed: int | None = Field(None, ge=0, description="Sampling seed; None: a fresh random one.")


class GenerateConfig(GenerationSettings):
    """`tulu-quant generate`: one prompt through any artifact."""

    chat_format: Literal["auto", "tulu", "tokenizer", "none"] = Field(
        "auto", description="auto: the folder's own template (tulu when it is ours or absent); none: the raw prompt."
    )
    system: str | None = Field(None, description="A system message before the prompt.")
    device: Literal["auto", "cpu", "cuda", "dml", "webgpu"] = Field(
        "auto", description="auto: what the folder runs on."
    )
    threads: int | None = Field(None, gt=0, description="CPU threads (onnxruntime intra-op, or torch); None: default.")

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings(**{k: getattr(self, k) for k in GenerationSettings.model_fields})


class PlanConfig(Strict):
    """`tulu-quant plan`: memory estimates (bits, group size and calibration size come from quantize: and
    calibrate:)."""

    gpu_mem: Size | None = Field(None, description="Also check this GPU memory, e.g. 24GiB or 10GB.")
    context: int | None = Field(None, gt=0, description="Serving context; None: the model's max_position_embeddings.")
    batch: int = Field(1, gt=0, description="Serving batch (sequences sharing the GPU).")


class DemoConfig(Strict):
    """The browser demo (demo/app.py, tulu_quant/demo/). Safe by default: local address, no public share link."""

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the demo to the network.")
    port: int = Field(7860, ge=0, le=65535)
    share: bool = Field(
        False, description="Ask Gradio for a public *.gradio.live link (anyone with it can use the model)."
    )
    device: Device = Field("auto", description="auto: cuda when available, else cpu.")
    threads: int | None = Field(None, gt=0, description="CPU threads for generation (None: the libraries' default).")
    max_input_chars: int = Field(4000, gt=0, description="Longer messages are refused with a message saying so.")
    max_conversation_chars: int = Field(
        100_000,
        gt=0,
        description="A longer conversation must be cleared first (the "
        "oldest turns are left out of the prompt long before, to fit the context).",
    )
    concurrency_limit: int = Field(
        1,
        ge=1,
        description="Answers generated at once; other requests wait in Gradio's "
        "queue, which shows each browser its place (each model also generates one answer "
        "at a time behind a lock).",
    )
    max_queue_size: int = Field(32, ge=1, description="Requests waiting beyond this are refused (queue full).")
    max_new_tokens: int = Field(256, gt=0, description="Initial value of the slider.")
    max_new_tokens_limit: int = Field(2048, gt=0, description="The slider's upper end.")
    temperature: float = Field(0.7, ge=0, le=2, description="0: greedy.")
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, ge=1, le=2)
    seed: int | None = Field(None, ge=0, description="None: a fresh random seed per answer.")

    @model_validator(mode="after")
    def _limits(self) -> DemoConfig:
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) exceeds max_new_tokens_limit ({self.max_new_tokens_limit})"
            )
        return self


# ---------------------------------------------------------------------------------------------------------- the run


class RunConfig(Strict):
    """Everything a run (and every command) is configured by. With no YAML, every value is its default here."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    run_dir: Path = Field(description="Everything a run writes goes under it; unset: runs/MODEL_NAME.")
    stages: list[StageName] = Field(default_factory=lambda: [s for s in STAGE_ORDER if s != "standin"])
    standin: StandinConfig = Field(default_factory=StandinConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    export_onnx: ExportOnnxConfig = Field(default_factory=ExportOnnxConfig)
    export_gguf: ExportGgufConfig = Field(default_factory=ExportGgufConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    sweep: list[str] = Field(default_factory=list, description="Variants `tulu-quant sweep` / `make sweep` compare.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _default_run_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("run_dir") is None:
            model = data.get("model")
            name = model.name if isinstance(model, ModelConfig) else (model or {}).get("name")
            data = {**data, "run_dir": Path("runs") / (name or ModelConfig.model_fields["name"].default)}
        return data

    @field_validator("run_dir", mode="after")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser()

    @model_validator(mode="after")
    def _ordered(self) -> RunConfig:
        order = [STAGE_ORDER.index(s) for s in self.stages]
        if order != sorted(set(order)):
            raise ValueError(f"stages must be unique and in pipeline order {list(STAGE_ORDER)}")
        return self


def config_hash(*parts: BaseModel | dict | str) -> str:
    """A stable short hash of configuration values (the manifest uses it to decide whether a stage must re-run)."""
    payload = [p.model_dump(mode="json", by_alias=True) if isinstance(p, BaseModel) else p for p in parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------- loading

# configs/ of a checkout (editable installs, `make`), else the copy a wheel installs as package data.
_CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIGS_DIR = _CHECKOUT_CONFIGS if _CHECKOUT_CONFIGS.is_dir() else Path(__file__).resolve().parent / "configs"


def _format_error(source: str, err: ValidationError, overridden: set[str] = frozenset()) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc) or "(top level)"
    # An invalid value that a flag or --set put there is the command line's, not the file's.
    if any(key == k or key.startswith(k + ".") for k in overridden):
        source = "command line"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or check its spelling against tulu_quant/config.py."
    if kind == "missing":
        return f"{source}: required key '{key}' is missing; add it."
    return f"{source}: key '{key}' = {first.get('input')!r} is invalid ({first['msg']}); fix the value."


def build(model: type[BaseModel], data: dict[str, Any], source: str, overridden: set[str] = frozenset()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err, overridden)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML file (see configs/).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the syntax.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values.")
    return data


def field_at(dotted: str, model: type[BaseModel] = None) -> FieldInfo:
    """The field a dotted key names (``quantize.bits``, ``validate.device``); a ConfigError listing the valid keys of
    the section otherwise. The CLI builds each flag's type, choices and help from it."""
    model = model or RunConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if part not in fields:
            section = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"'{dotted}': {section} has no setting '{part}'; its keys are {sorted(fields)}.")
        field = fields[part]
        if depth == len(parts) - 1:
            return field
        inner = field.annotation
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            raise ConfigError(f"'{dotted}': '{'.'.join(parts[: depth + 1])}' is a value, not a section; set it whole.")
        model = inner
    raise AssertionError


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a section.")
    node[leaf] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """--set KEY=VALUE -> (KEY, VALUE), the value read as YAML (3, 0.5, true, null, [a, b], {k: v}, or text)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: write KEY=VALUE, e.g. --set quantize.bits=3 or --set validate.suite=full.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run config: the YAML at `path` (None: no file, every default), dotted-key overrides (CLI flags and --set; a
    None value means "not given"), and the quantize variant, validated together.

    Quantize settings layer as: variant file < the YAML's own ``quantize`` keys < overrides. A variant chosen by an
    override replaces the YAML's ``quantize`` section (the YAML's tuning belongs to its own default variant).
    """
    data = read_yaml(Path(path)) if path is not None else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for dotted in overrides:
        field_at(dotted)
    for dotted, value in overrides.items():
        if not dotted.startswith("quantize."):
            set_dotted(data, dotted, value)
    quantize = dict(data.get("quantize") or {})
    cli_quantize = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("quantize.")}
    if "variant" in cli_quantize:
        quantize = {}
    variant = cli_quantize.get("variant", quantize.get("variant"))
    data["quantize"] = {**(load_variant(variant) if variant else {}), **quantize, **cli_quantize}
    if variant:
        data["quantize"]["variant"] = variant
    return build(RunConfig, data, str(path) if path is not None else "defaults", set(overrides))


def load_variant(name: str) -> dict[str, Any]:
    path = CONFIGS_DIR / "variants" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / "variants").glob("*.yaml"))
        raise ConfigError(f"quantize.variant: unknown variant '{name}'; choose one of {known}.")
    data = read_yaml(path)
    build(QuantizeConfig, data, str(path))
    return data
