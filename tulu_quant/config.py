"""Typed configuration: every setting of every stage, with its default, lives here and nowhere else.

A YAML file in ``configs/`` holds values only. ``load_config`` turns it into a ``RunConfig``; an unknown key, a wrong
type or a missing required value is one ``ConfigError`` naming the file and the key. CLI flags override values through
``apply_overrides`` (dotted keys), validated by the same models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STAGE_ORDER = ("standin", "recover", "calibrate", "quantize", "validate", "export_onnx", "publish")
StageName = Literal["standin", "recover", "calibrate", "quantize", "validate", "export_onnx", "publish"]
Dtype = Literal["float16", "bfloat16", "float32"]
# Semantic checks of `recover` that an expert may switch off (structural errors cannot be skipped: no output is possible).
RecoverCheck = Literal["keys", "config", "diff-scale", "finite", "verify"]


class ConfigError(ValueError):
    """A configuration problem, phrased as one sentence that names the file/key and says what to do."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def parse_size(value: int | str) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


# ---------------------------------------------------------------------------------------------------------- the model


class ModelConfig(Strict):
    """Which model family member this run is about and where its inputs are."""

    name: str = Field(description="Short name used in run directories and the model card, e.g. tulu-13b.")
    base: Path = Field(description="Raw LLaMA weights in Hugging Face format (a directory).")
    diff: Path = Field(description="The Tulu weight diff (a directory, as published by AllenAI).")
    hub_base_model: str = Field("allenai/tulu-13b", description="Hub id of the model this run reproduces (model card).")
    context_length: int = Field(2048, gt=0, description="Context used for perplexity windows and calibration samples.")
    chat_format: Literal["tulu", "tokenizer"] = Field(
        "tulu", description="tulu: open-instruct's <|user|>/<|assistant|> format; tokenizer: the model's own template."
    )
    license: str = Field("other", description="SPDX id or 'other' for the model card's license field.")
    license_name: str = Field("impact-license-low-risk+llama-license", description="Model card license_name.")

    @field_validator("base", "diff", mode="after")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser()


# ---------------------------------------------------------------------------------------------------------- stand-in


class StandinConfig(Strict):
    """The offline stand-in: a real small LLaMA-architecture model turned into an open-instruct-style base + diff pair."""

    delta_scale: float = Field(0.01, gt=0, description="Relative size ||delta|| / ||W|| of the synthetic finetune delta.")
    seed: int = 0
    diff_shards: int = Field(3, ge=1, description="Number of float32 shards the diff is split into (exercises sharding).")
    added_tokens: list[str] = Field(default_factory=lambda: ["<pad>"], min_length=1)


# ---------------------------------------------------------------------------------------------------------- recover


class RecoverConfig(Strict):
    dtype: Dtype = "float16"
    max_shard_size: int | str = Field("5GB", description="Largest output shard, e.g. 5GB or 500MB.")
    skip_checks: list[RecoverCheck] = Field(default_factory=list, description="Expert overrides of semantic checks.")
    # Measured (docs/benchmarks.md): finetune diffs sit near 0.01; a full model passed as the diff gives ~1, swapped
    # arguments give >> 1. 0.5 separates them with a wide margin on both sides.
    diff_scale_threshold: float = Field(0.5, gt=0, description="Median per-tensor ||diff||/||base|| above this fails.")
    verify: bool = Field(False, description="Score a built-in English text with the result and greedily generate.")
    verify_max_ppl: float = Field(
        200.0, gt=1, description="--verify fails above this perplexity (working models score < 60, broken ones > 1000)."
    )
    verify_new_tokens: int = Field(8, ge=0)

    @field_validator("max_shard_size", mode="after")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        if parse_size(value) <= 0:
            raise ValueError("must be a positive size such as 5GB")
        return value


# ---------------------------------------------------------------------------------------------------------- calibrate


class SourceWeight(Strict):
    source: str = Field(description="A name from tulu_quant.data's registry, e.g. wiki, shakespeare, tulu-sft, file:PATH.")
    weight: float = Field(1.0, gt=0)
    split: str = Field("calibration", description="Which split of the source to draw from.")


class CalibrateConfig(Strict):
    mix: list[SourceWeight] = Field(default_factory=lambda: [SourceWeight(source="wiki")], min_length=1)
    num_samples: int = Field(128, gt=0)
    seq_len: int = Field(2048, gt=0)
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------- quantize


class QuantizeConfig(Strict):
    variant: str | None = Field(None, description="A name from configs/variants/ whose settings are applied first.")
    bits: Literal[2, 3, 4, 8] = 4
    group_size: int = Field(128, description="-1 (per channel) or a positive group size such as 32, 64, 128.")
    desc_act: bool = Field(False, description="Act order: quantize columns in order of decreasing Hessian diagonal.")
    sym: bool = True
    damp_percent: float = Field(0.01, gt=0, lt=1)
    true_sequential: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("group_size", mode="after")
    @classmethod
    def _group(cls, value: int) -> int:
        if value != -1 and value <= 0:
            raise ValueError("must be -1 (per channel) or a positive group size such as 128")
        return value


# ---------------------------------------------------------------------------------------------------------- validate


class Gate(Strict):
    metric: str = Field(description="A metric key of report.json, e.g. ppl_increase_pct, kl_mean, mmlu_0shot.")
    max_increase: float | None = None
    max_drop: float | None = None
    max_value: float | None = None
    outside_noise_only: bool = Field(True, description="A drop within the 95% interval of noise does not fail.")


class ValidateConfig(Strict):
    suite: str = Field("quick", description="A file name in configs/eval/ (without .yaml).")
    ppl_sources: list[str] = Field(default_factory=lambda: ["wiki", "shakespeare"])
    ppl_split: str = "evaluation"
    max_windows: int | None = Field(None, description="Cap on perplexity windows per source (None: all).")
    gates: list[Gate] = Field(default_factory=list)
    judge_url: str | None = Field(None, description="OpenAI-compatible endpoint for AlpacaFarm-style pairwise judging.")
    judge_model: str | None = None


# ---------------------------------------------------------------------------------------------------------- export


class ExportOnnxConfig(Strict):
    precision: Literal["int4", "fp16", "fp32"] = "int4"
    target: Literal["cpu", "cuda", "dml", "webgpu"] = "cpu"
    from_gptq: bool = Field(True, description="int4 from our GPTQ checkpoint (keeps its weights) instead of RTN/k-quant.")
    block_size: int = Field(32, description="int4 block size when quantizing from fp16.")
    symmetric: bool = True
    accuracy_level: int = Field(4, ge=0, le=4, description="MatMulNBits accuracy level (4: int8 compute on CPU).")
    algorithm: Literal["rtn", "k_quant"] = "k_quant"


# ---------------------------------------------------------------------------------------------------------- publish


class PublishConfig(Strict):
    repo_id: str | None = None
    revision: str | None = Field(None, description="Branch to push to; defaults to the variant name.")
    push: bool = False
    private: bool = False


# ---------------------------------------------------------------------------------------------------------- the run


class RunConfig(Strict):
    model: ModelConfig
    run_dir: Path = Field(description="Everything this run writes goes under this directory.")
    stages: list[StageName] = Field(default_factory=lambda: [s for s in STAGE_ORDER if s != "standin"])
    standin: StandinConfig = Field(default_factory=StandinConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    export_onnx: ExportOnnxConfig = Field(default_factory=ExportOnnxConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, protected_namespaces=())

    @field_validator("run_dir", mode="after")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser()

    @model_validator(mode="after")
    def _ordered(self) -> "RunConfig":
        order = [STAGE_ORDER.index(s) for s in self.stages]
        if order != sorted(set(order)):
            raise ValueError(f"stages must be unique and in pipeline order {list(STAGE_ORDER)}")
        return self

    def section(self, stage: str) -> BaseModel:
        return {"validate": self.validate_}.get(stage) or getattr(self, stage)


def config_hash(*parts: BaseModel | dict | str) -> str:
    """A stable short hash of configuration values (the manifest uses it to decide whether a stage must re-run)."""
    payload = [p.model_dump(mode="json", by_alias=True) if isinstance(p, BaseModel) else p for p in parts]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------- loading


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or check its spelling against tulu_quant/config.py."
    if kind == "missing":
        return f"{source}: required key '{key}' is missing; add it."
    return f"{source}: key '{key}' = {first.get('input')!r} is invalid ({first['msg']}); fix the value."


def build(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


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


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a section.")
    node[leaf] = value


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run config YAML, apply dotted-key overrides (CLI flags) and the quantize variant, and validate.

    Quantize settings layer as: variant file < the YAML's own ``quantize`` keys < CLI flags. A variant chosen on the CLI
    replaces the YAML's ``quantize`` section (the YAML's tuning belongs to its own default variant).
    """
    path = Path(path)
    data = read_yaml(path)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
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
    return build(RunConfig, data, str(path))


CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_variant(name: str) -> dict[str, Any]:
    path = CONFIGS_DIR / "variants" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / "variants").glob("*.yaml"))
        raise ConfigError(f"quantize.variant: unknown variant '{name}'; choose one of {known}.")
    data = read_yaml(path)
    build(QuantizeConfig, data, str(path))
    return data
