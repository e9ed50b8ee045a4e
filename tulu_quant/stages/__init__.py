"""The pipeline's stages, one module each, in the order `tulu-quant run` runs them.

Every module here declares ``STAGE`` (its name, output folder and role, a ``tulu_quant.stages.base.Stage``), one
public ``run(...)`` that does the stage's work on explicit paths, and ``step(cfg, ctx)``, which wires ``run`` into a run
directory for the pipeline. ``ORDER`` below is the one list of stages: config validation, the pipeline, the summary,
the sweep, the demo and preflight all derive theirs from it and from each module's ``STAGE``. Modules are imported
lazily (``load``), so `tulu-quant --help` imports none of the heavy libraries a stage uses.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The exports come before validation so that the report (and the model card) covers every artifact.
ORDER = ("standin", "recover", "calibrate", "quantize", "export_onnx", "export_gguf", "validate", "publish")
# The stage whose output every artifact is compared with (validate's reference, the summary's "vs fp16").
REFERENCE = "recover"


def load(name: str) -> ModuleType:
    """The stage's module (tulu_quant.stages.NAME)."""
    if name not in ORDER:
        raise KeyError(f"unknown stage {name!r}; the stages are {list(ORDER)}")
    return importlib.import_module(f"{__name__}.{name}")


def info(name: str):
    """The stage's ``STAGE`` declaration."""
    return load(name).STAGE


def artifact_stages() -> list[str]:
    """Stages whose output is a model artifact (served by the demo, validated, listed in the summary), in order."""
    return [name for name in ORDER if info(name).artifact]


def candidate_stages() -> list[str]:
    """Artifact stages compared with the reference (the quantized and exported models)."""
    return [name for name in artifact_stages() if name != REFERENCE]
