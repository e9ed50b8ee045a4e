"""The run directory's manifest.json: what each stage produced from what, and whether it must run again.

Per stage it records the config hash, the inputs (each file's size and mtime, or the sha256 the manifest already holds
for it when an earlier stage wrote it), the outputs with the sha256 of every file, wall time, peak RSS, library
versions and the stage's own summary. Later stages read the manifest, never parse file names.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .checkpoint import sha256_file
from .errors import UserValueError

MANIFEST = "manifest.json"
TRACKED_LIBRARIES = (
    "tulu-quant",
    "torch",
    "transformers",
    "safetensors",
    "gptqmodel",
    "optimum",
    "onnxruntime",
    "onnxruntime-genai",
    "gradio",
    "huggingface_hub",
)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def files_under(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def hash_outputs(paths: list[Path], root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under the outputs, keyed by path relative to the run dir when inside it."""
    out = {}
    for path in paths:
        for f in files_under(path):
            out[_rel(f, root)] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return out


def _rel(path: Path, root: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


@dataclass
class Manifest:
    path: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        path = Path(run_dir) / MANIFEST
        if path.is_file():
            try:
                return cls(path, json.loads(path.read_text())["stages"])
            except (json.JSONDecodeError, KeyError) as err:
                raise UserValueError(
                    f"{path}: unreadable manifest ({err}); move it away to start the run afresh."
                ) from None
        return cls(path)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"stages": self.stages}, indent=2, sort_keys=False))
        os.replace(tmp, self.path)

    # -------------------------------------------------------------------------------------------- fingerprints

    def fingerprint(self, paths: list[Path]) -> dict[str, Any]:
        """Identify inputs cheaply: files an earlier stage wrote are identified by the sha256 recorded for them,
        others (a 26 GB base model, say) by size and modification time."""
        known = {k: v["sha256"] for entry in self.stages.values() for k, v in entry.get("outputs", {}).items()}
        prints: dict[str, Any] = {}
        for path in paths:
            for f in files_under(path):
                key = _rel(f, self.root)
                stat = f.stat()
                prints[key] = known.get(key) or f"{stat.st_size}:{stat.st_mtime_ns}"
            if not Path(path).exists():
                prints[_rel(path, self.root)] = "missing"
        return prints

    def is_fresh(self, name: str, config_hash: str, inputs: list[Path], outputs: list[Path]) -> tuple[bool, str]:
        entry = self.stages.get(name)
        if entry is None or entry.get("status") != "done":
            return False, "not run yet"
        if entry["config_hash"] != config_hash:
            return False, "its configuration changed"
        if entry["inputs"] != self.fingerprint(inputs):
            return False, "its inputs changed"
        for rel, rec in entry["outputs"].items():
            f = self.root / rel if not Path(rel).is_absolute() else Path(rel)
            if not f.is_file() or f.stat().st_size != rec["bytes"]:
                return False, f"its output {rel} is missing or changed"
        if not all(Path(p).exists() for p in outputs):
            return False, "an output is missing"
        return True, "inputs and configuration unchanged"

    def record(
        self,
        name: str,
        *,
        config_hash: str,
        config: dict,
        inputs: list[Path],
        input_prints: dict[str, Any],
        outputs: list[Path],
        seconds: float,
        peak_rss: int,
        summary: dict[str, Any],
    ) -> None:
        self.stages[name] = {
            "status": "done",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config_hash": config_hash,
            "config": config,
            "inputs": input_prints,
            "outputs": hash_outputs(outputs, self.root),
            "output_dirs": [_rel(p, self.root) for p in outputs],
            "seconds": round(seconds, 2),
            "peak_rss_bytes": peak_rss,
            "versions": library_versions(),
            "summary": summary,
        }

    def adopt(self, other: Manifest, names: list[str]) -> None:
        """Take finished stages of another run directory as ours (a sweep shares one recovered model and one
        calibration set between variants); their paths are made absolute so they keep pointing at the other run."""
        for name in names:
            entry = other.stages.get(name)
            if entry is None or entry.get("status") != "done":
                continue
            absolute = lambda rel: str(other.root.resolve() / rel) if not Path(rel).is_absolute() else rel  # noqa: E731
            self.stages[name] = {
                **entry,
                "outputs": {absolute(k): v for k, v in entry["outputs"].items()},
                "output_dirs": [absolute(p) for p in entry.get("output_dirs", [])],
            }

    def output_dir(self, name: str) -> Path | None:
        entry = self.stages.get(name)
        if not entry or not entry.get("output_dirs"):
            return None
        rel = Path(entry["output_dirs"][0])
        return rel if rel.is_absolute() else self.root / rel
