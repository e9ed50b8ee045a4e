r"""Benchmark prompts, following open-instruct's evaluation scripts (the protocol of Tulu's published table).

Every benchmark asks one user message in the run's chat format (``tulu_quant.chat.render``) and then starts the
assistant's answer with a short prefix, exactly as open-instruct does with ``--use_chat_format``::

    render([{"role": "user", "content": USER}]) + PREFIX      # a space in between unless the prompt ends in one

| benchmark | USER | PREFIX |
| --- | --- | --- |
| MMLU | MMLU's header (below) + shots + question | The answer is: |
| GSM8K | "Answer the following questions.\n\n" + 8 demonstrations + "Question: {q}" | Answer: |
| BBH | the task's few-shot prompt + "\n\nQ: {input}" | A: |
| TydiQA | instruction + 1 demonstration + passage/question | Answer: |
| Codex | "Complete the following python function.\n\n\n" + HumanEval prompt | Here is the completed function:\n\n\n |

MMLU's header: "The following are multiple choice questions (with answers) about  {subject}.\n\n".

Quirks kept on purpose because the published numbers were measured with them: MMLU's subject line has two spaces
("about  abstract algebra", open-instruct's format_subject prefixes a space); GSM's direct demonstrations start with
"Quesion:" (sic). TydiQA uses the English templates for every language (open-instruct localizes them).
"""

from __future__ import annotations

from ..chat import render

CHOICES = ("A", "B", "C", "D")


def chat_prompt(tokenizer, fmt: str, user: str, prefix: str = "") -> str:
    """One user turn in the chat format, then the start of the assistant's answer."""
    text = render([{"role": "user", "content": user}], tokenizer, fmt)
    if not prefix:
        return text
    return text + prefix if text[-1:] in ("\n", " ") else text + " " + prefix


# ------------------------------------------------------------------------------------------------------ MMLU


def mmlu_example(item: dict, with_answer: bool) -> str:
    text = item["question"] + "".join(f"\n{letter}. {choice}" for letter, choice in zip(CHOICES, item["choices"]))
    text += "\nAnswer:"
    return text + f" {item['answer']}\n\n" if with_answer else text


def mmlu_user(subject: str, shots: list[dict], item: dict) -> str:
    header = "The following are multiple choice questions (with answers) about {}.\n\n".format(
        "".join(" " + part for part in subject.split("_"))
    )
    return header + "".join(mmlu_example(s, True) for s in shots) + mmlu_example(item, False)


MMLU_PREFIX = "The answer is:"


# ------------------------------------------------------------------------------------------------------ GSM8K


def gsm_user(question: str, exemplars: list[dict], cot: bool) -> str:
    """exemplars: dicts with question, cot_answer (reasoning ending in 'So the answer is N.') and short_answer."""
    if not exemplars:
        return "Answer the following question.\n\n" + "Question: " + question.strip()
    if cot:
        demos = ["Question: " + e["question"] + "\n" + "Answer: " + e["cot_answer"] for e in exemplars]
    else:
        demos = ["Quesion: " + e["question"] + "\n" + "Answer: " + e["short_answer"] for e in exemplars]
    return "Answer the following questions.\n\n" + "\n\n".join(demos) + "\n\n" + "Question: " + question.strip()


GSM_PREFIX = "Answer:"


# ------------------------------------------------------------------------------------------------------ BBH


def bbh_user(task_prompt: str, question: str) -> str:
    return task_prompt.strip() + "\n\nQ: " + question


BBH_PREFIX = "A:"


# ------------------------------------------------------------------------------------------------------ TydiQA

TYDIQA_WITH_PASSAGE = (
    "Answer the following question based on the information in the given passage.",
    "Passage:",
    "Question:",
    "Answer:",
)
TYDIQA_CLOSED_BOOK = ("Answer the following question.", "Question:", "Answer:")


def tydiqa_user(item: dict, shots: list[dict], with_passage: bool) -> tuple[str, str]:
    """(user text, answer prefix). Items: context, question, answers (the first answer is the demonstration's)."""
    if with_passage:
        instruction, p_label, q_label, a_label = TYDIQA_WITH_PASSAGE
    else:
        instruction, q_label, a_label = TYDIQA_CLOSED_BOOK
    text = instruction + "\n\n"
    if shots:
        demos = []
        for shot in shots:
            demo = f"{q_label} {shot['question']}\n{a_label} {shot['answers'][0]}"
            demos.append(f"{p_label} {shot['context']}\n{demo}" if with_passage else demo)
        text += "\n\n".join(demos) + "\n\n"
    question = f"{q_label} {item['question']}\n"
    text += f"{p_label} {item['context']}\n{question}" if with_passage else question
    return text, a_label


# ------------------------------------------------------------------------------------------------------ Codex-Eval

CODEX_INSTRUCTION = "Complete the following python function.\n\n\n"
CODEX_PREFIX = "Here is the completed function:\n\n\n"
# Stop sequences from the Codex paper: the function ends where top-level code starts.
CODEX_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def codex_user(problem_prompt: str) -> str:
    return CODEX_INSTRUCTION + problem_prompt


# ------------------------------------------------------------------------------------------------------ AlpacaFarm

# Held-out instructions when no AlpacaEval file is given: tasks over evaluation passages (never calibration text).
PASSAGE_TASKS = (
    "Summarize the following passage in two sentences.\n\n{passage}",
    "List three facts stated in the following passage.\n\n{passage}",
    "Write a short title for the following passage.\n\n{passage}",
    "Explain the following passage to a twelve-year-old.\n\n{passage}",
    "Write one question that the following passage answers, and answer it.\n\n{passage}",
)
