"""The browser demo's logic; demo/app.py is the Gradio page around it.

- which artifact to serve: tulu_quant.artifacts.choose (the fastest one this machine runs, and why)
- conversations, message checks and fitting the context: tulu_quant.demo.conversation
- the engine that streams answers to every browser session: tulu_quant.demo.engine
- the About panel: tulu_quant.demo.about
- loading (one model instance per artifact, shared by every session): load_models, below
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Choice, choose, describe_folder, reference_folder
from ..config import DemoConfig
from ..errors import MissingPath, UserValueError
from .about import about_markdown, read_report
from .engine import Engine

log = logging.getLogger(__name__)

# The page: demo/app.py in a checkout; a wheel installs it as tulu_quant/webapp/app.py.
_CHECKOUT_APP = Path(__file__).resolve().parents[2] / "demo" / "app.py"
APP = _CHECKOUT_APP if _CHECKOUT_APP.is_file() else Path(__file__).resolve().parents[1] / "webapp" / "app.py"


@dataclass
class DemoModels:
    main: Engine
    choice: Choice
    compare: Engine | None
    about: str


def load_models(model: Path, compare: Path | None, cfg: DemoConfig) -> DemoModels:
    """Load the artifact to serve (and the --compare model), once, for every browser session."""
    from ..generate import load

    choice = choose(model, cfg.device)
    folder = reference_folder(compare) if compare is not None else None
    if folder is not None and folder.resolve() == choice.artifact.path.resolve():
        raise UserValueError(
            f"--compare {compare}: that is the model already served ({folder}); pass the fp16 model "
            "or a run directory whose recovered model differs."
        )
    log.info("demo: serving %s at %s (%s)", choice.artifact.label, choice.artifact.path, choice.reason)
    main = Engine(load(choice.artifact.path, cfg.device, cfg.threads), choice.artifact)
    other = None
    if folder is not None:
        other = Engine(load(folder, cfg.device, cfg.threads), describe_folder(folder), main.chat_format)
        log.info("demo: comparing with %s at %s", other.artifact.label, folder)
    return DemoModels(main, choice, other, about_markdown(main, choice, read_report(choice.run_dir), other))


def load_app():
    """demo/app.py as a module (the page lives beside the package, as the project layout fixes)."""
    if not APP.is_file():
        raise MissingPath(f"{APP}: the demo page is missing; reinstall tulu-quant or run it from a checkout.")
    spec = importlib.util.spec_from_file_location("tulu_quant_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
