"""The stage contract: what a stage module declares (``Stage``), what the pipeline hands it (``Context``), and what
its ``step()`` returns (``Step``). A leaf module: stages import it, the pipeline imports stages, nothing cycles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..manifest import Manifest
from ..progress import NULL, Progress


@dataclass(frozen=True)
class Stage:
    """A stage module's declaration of itself."""

    name: str  # the key in configs' `stages:` and in manifest.json
    output: str | None  # its folder inside the run directory (None: it writes elsewhere, e.g. the stand-in)
    artifact: str | None = None  # label when its output is a model (validated, served, summarised), e.g. "GPTQ"
    sweep: Literal["shared", "variant"] | None = None  # a sweep runs it once for all variants, or once per variant
    # Python modules it imports and the command that installs each (preflight checks them before any heavy work).
    requires: tuple[tuple[str, str], ...] = ()


class StageNotReady(UserError, RuntimeError):
    """A stage needs the output of one that has not run."""


@dataclass
class Context:
    """What a stage gets from the pipeline besides the config."""

    run_dir: Path
    manifest: Manifest
    progress: Progress = NULL
    log_file: Path | None = None

    def out(self, stage: Stage) -> Path:
        """The stage's own output folder in the run directory."""
        return self.run_dir / stage.output

    def produced(self, name: str) -> Path:
        """The output folder an earlier stage recorded in the manifest (a clear error if it has not run)."""
        path = self.manifest.output_dir(name)
        if path is None or not path.exists():
            raise StageNotReady(
                f"{self.run_dir}: stage '{name}' has not produced its output yet; add it to the config's stages or "
                "run it first."
            )
        return path

    def recorded(self, name: str) -> Path | None:
        """An earlier stage's output folder when it ran and still exists, else None."""
        path = self.manifest.output_dir(name)
        return path if path is not None and path.exists() else None


@dataclass
class Step:
    """One stage of one run: what it reads and writes, the config values that decide whether it must run again, and
    the work itself."""

    name: str
    inputs: list[Path]
    outputs: list[Path]
    config: dict[str, Any]
    run: Callable[[], dict[str, Any]]  # does the work; returns a small JSON-able summary for the manifest
    describe: Callable[[dict[str, Any]], str] = field(default=lambda summary: "")
