r"""Benchmark prompts of the open-instruct-2023-06 protocol (docs/protocol.md), written from reading its scripts.

Every benchmark but Codex asks one user message in the run's chat format (``tulu_quant.chat.render``) and starts the
assistant's answer with a short prefix. In the tulu format that is exactly open-instruct's hand-written
``"<|user|>\n" + USER + "\n<|assistant|>\n" + PREFIX`` (the prefix follows the newline directly; in another template
a space is put in between unless the rendered prompt ends in whitespace). MMLU and TydiQA strip the user text first,
as open-instruct does; the others do not.

| benchmark | USER | PREFIX |
| --- | --- | --- |
| MMLU | MMLU's header (below) + k dev-split examples + the question | The answer is: |
| GSM8K | "Answer the following questions.\n\n" + 8 exemplars + "Question: {q}" | Answer: |
| BBH | the task's 3-shot prompt + "\n\nQ: {input}" | A: |
| TydiQA | the language's instruction + 1 demonstration + passage/question | the language's answer label |
| AlpacaFarm | the instruction (AlpacaEval's: AlpacaFarm's instruction with its input appended) | (none) |
| Codex | no chat format: the HumanEval prompt as it is (the tulu format, when asked, is shown below) | |

MMLU's header: "The following are multiple choice questions (with answers) about  {subject}.\n\n" (two spaces:
open-instruct's format_subject prefixes each word with one). GSM's direct exemplars start with "Quesion:" (sic), as
open-instruct's do.
"""

from __future__ import annotations

from ..chat import render

CHOICES = ("A", "B", "C", "D")


def chat_prompt(tokenizer, fmt: str, user: str, prefix: str = "", strip: bool = False) -> str:
    """One user turn in the chat format, then the start of the assistant's answer."""
    text = render([{"role": "user", "content": user.strip() if strip else user}], tokenizer, fmt)
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
    """exemplars: Wei et al.'s {question, cot_answer (reasoning ending in 'So the answer is N.'), short_answer}."""
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

# Each language's (instruction, passage label, question label, answer label) with the gold passage, and (instruction,
# question label, answer label) closed book, as TyDiQA's nine languages are named in its ids.
TYDIQA_WITH_PASSAGE = {
    "english": (
        "Answer the following question based on the information in the given passage.",
        "Passage:",
        "Question:",
        "Answer:",
    ),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": (
        "প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।",
        "অধ্যায়:",
        "প্রশ্ন:",
        "উত্তর:",
    ),
    "finnish": (
        "Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.",
        "Kappale:",
        "Kysymys:",
        "Vastaus:",
    ),
    "indonesian": (
        "Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.",
        "Bagian:",
        "Pertanyaan:",
        "Jawaban:",
    ),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.", "Отрывок:", "Вопрос:", "Ответ:"),
    "swahili": (
        "Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.",
        "Kifungu:",
        "Swali:",
        "Jibu:",
    ),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}
TYDIQA_CLOSED_BOOK = {
    "english": ("Answer the following question.", "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي.", "السؤال:", "الإجابة:"),
    "bengali": ("নিম্নলিখিত প্রশ্নের উত্তর দিন।", "প্রশ্ন:", "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen.", "Kysymys:", "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut.", "Pertanyaan:", "Jawaban:"),
    "korean": ("다음 질문에 답하십시오.", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос.", "Вопрос:", "Ответ:"),
    "swahili": ("Jibu swali lifuatalo.", "Swali:", "Jibu:"),
    "telugu": ("క్రింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "ప్రశ్న:", "సమాధానం:"),
}


def tydiqa_user(item: dict, shots: list[dict], with_passage: bool) -> tuple[str, str]:
    """(user text, answer prefix) in the item's language. Items: lang, context, question, answers (the first answer is
    a demonstration's)."""
    if with_passage:
        instruction, p_label, q_label, a_label = TYDIQA_WITH_PASSAGE[item["lang"]]
    else:
        instruction, q_label, a_label = TYDIQA_CLOSED_BOOK[item["lang"]]
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


def codex_prompt(tokenizer, fmt: str, problem_prompt: str, chat: bool) -> str:
    """Without the chat format (open-instruct's jobs for Tulu's table): the HumanEval prompt itself, which the model
    continues with the function's body. With it: the instruction as the user turn, and the assistant's turn starting
    with the prefix and the prompt again, so the model still completes the body."""
    if not chat:
        return problem_prompt
    return chat_prompt(tokenizer, fmt, CODEX_INSTRUCTION + problem_prompt, CODEX_PREFIX + problem_prompt)
