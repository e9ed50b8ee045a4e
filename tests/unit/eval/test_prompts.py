"""The exact prompt of every benchmark and mode of the open-instruct-2023-06 protocol, on one fixed item each, in the
tulu chat format (the format behind Tulu's table; Codex runs without it). The expected strings are written out from
reading open-instruct's eval scripts at e44fcf5 (how each one concatenates its pieces), not produced by our code."""

import pytest

from tulu_quant.eval import prompts
from tulu_quant.eval.decode import encode
from tulu_quant.eval.text_metrics import bbh_direct_prompt

QUESTION = {"question": "What is 1 + 1?", "choices": ["1", "2", "3", "4"], "answer": "B", "subject": "college_math"}
DEV = [
    {"question": "What is 0 + 0?", "choices": ["0", "1", "2", "3"], "answer": "A", "subject": "college_math"},
    {"question": "What is 2 + 1?", "choices": ["1", "2", "3", "4"], "answer": "C", "subject": "college_math"},
]


def tulu(tokenizer, user, prefix="", strip=False):
    return prompts.chat_prompt(tokenizer, "tulu", user, prefix, strip=strip)


def test_mmlu_zero_and_few_shot(tokenizer):
    zero = tulu(tokenizer, prompts.mmlu_user("college_math", [], QUESTION), prompts.MMLU_PREFIX, strip=True)
    assert zero == (
        "<|user|>\n"
        "The following are multiple choice questions (with answers) about  college math.\n\n"
        "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        "\n<|assistant|>\nThe answer is:"
    )
    few = tulu(tokenizer, prompts.mmlu_user("college_math", DEV, QUESTION), prompts.MMLU_PREFIX, strip=True)
    assert few == (
        "<|user|>\n"
        "The following are multiple choice questions (with answers) about  college math.\n\n"
        "What is 0 + 0?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: A\n\n"
        "What is 2 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: C\n\n"
        "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
        "\n<|assistant|>\nThe answer is:"
    )


EXEMPLARS = [
    {
        "question": "Tom has 2 pens and buys 3. How many?",
        "cot_answer": "2 + 3 = 5. So the answer is 5.",
        "short_answer": "5",
    },
    {
        "question": "Ann had 9 cakes and ate 4. How many?",
        "cot_answer": "9 - 4 = 5. So the answer is 5.",
        "short_answer": "5",
    },
]


def test_gsm_direct_and_cot(tokenizer):
    question = "  A farm has 3 cows and 2 more. How many?\n"
    cot = tulu(tokenizer, prompts.gsm_user(question, EXEMPLARS, cot=True), prompts.GSM_PREFIX)
    assert cot == (
        "<|user|>\n"
        "Answer the following questions.\n\n"
        "Question: Tom has 2 pens and buys 3. How many?\nAnswer: 2 + 3 = 5. So the answer is 5.\n\n"
        "Question: Ann had 9 cakes and ate 4. How many?\nAnswer: 9 - 4 = 5. So the answer is 5.\n\n"
        "Question: A farm has 3 cows and 2 more. How many?"
        "\n<|assistant|>\nAnswer:"
    )
    direct = tulu(tokenizer, prompts.gsm_user(question, EXEMPLARS, cot=False), prompts.GSM_PREFIX)
    assert direct == (
        "<|user|>\n"
        "Answer the following questions.\n\n"
        "Quesion: Tom has 2 pens and buys 3. How many?\nAnswer: 5\n\n"
        "Quesion: Ann had 9 cakes and ate 4. How many?\nAnswer: 5\n\n"
        "Question: A farm has 3 cows and 2 more. How many?"
        "\n<|assistant|>\nAnswer:"
    )


# A task prompt as tulu_quant.data.tasks gives it: the file without its canary line and the "-----" line.
BBH_PROMPT = (
    "Evaluate the result of a random Boolean expression.\n\n"
    "Q: not ( True ) and ( True ) is\n"
    "A: Let's think step by step.\nnot ( True ) = False. So the answer is False.\n\n"
    "Q: True and not not ( not False ) is\n"
    "A: Let's think step by step.\nnot False = True. So the answer is True.\n"
)


def test_bbh_direct_and_cot(tokenizer):
    question = "not True or False is"
    cot = tulu(tokenizer, prompts.bbh_user(BBH_PROMPT, question), prompts.BBH_PREFIX)
    assert cot == (
        "<|user|>\n"
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( True ) and ( True ) is\n"
        "A: Let's think step by step.\nnot ( True ) = False. So the answer is False.\n\n"
        "Q: True and not not ( not False ) is\n"
        "A: Let's think step by step.\nnot False = True. So the answer is True."
        "\n\nQ: not True or False is"
        "\n<|assistant|>\nA:"
    )
    direct = tulu(tokenizer, prompts.bbh_user(bbh_direct_prompt(BBH_PROMPT), question), prompts.BBH_PREFIX)
    assert direct == (
        "<|user|>\n"
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( True ) and ( True ) is\nA: False.\n\n"
        "Q: True and not not ( not False ) is\nA: True."
        "\n\nQ: not True or False is"
        "\n<|assistant|>\nA:"
    )


SHOT = {
    "lang": "finnish",
    "context": "Helsinki on Suomen pääkaupunki.",
    "question": "Mikä on pääkaupunki?",
    "answers": ["Helsinki"],
}
ITEM = {"lang": "finnish", "context": "Turku on vanha kaupunki.", "question": "Mikä on vanha?", "answers": ["Turku"]}


def test_tydiqa_goldp_and_closed_book_in_the_items_language(tokenizer):
    user, prefix = prompts.tydiqa_user(ITEM, [SHOT], with_passage=True)
    assert tulu(tokenizer, user, prefix, strip=True) == (
        "<|user|>\n"
        "Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.\n\n"
        "Kappale: Helsinki on Suomen pääkaupunki.\nKysymys: Mikä on pääkaupunki?\nVastaus: Helsinki\n\n"
        "Kappale: Turku on vanha kaupunki.\nKysymys: Mikä on vanha?"
        "\n<|assistant|>\nVastaus:"
    )
    user, prefix = prompts.tydiqa_user(ITEM, [SHOT], with_passage=False)
    assert tulu(tokenizer, user, prefix, strip=True) == (
        "<|user|>\n"
        "Vastaa seuraavaan kysymykseen.\n\n"
        "Kysymys: Mikä on pääkaupunki?\nVastaus: Helsinki\n\n"
        "Kysymys: Mikä on vanha?"
        "\n<|assistant|>\nVastaus:"
    )
    english = {**ITEM, "lang": "english"}
    user, prefix = prompts.tydiqa_user(english, [], with_passage=True)
    assert (user, prefix) == (
        "Answer the following question based on the information in the given passage.\n\n"
        "Passage: Turku on vanha kaupunki.\nQuestion: Mikä on vanha?\n",
        "Answer:",
    )
    assert (
        set(prompts.TYDIQA_WITH_PASSAGE)
        == set(prompts.TYDIQA_CLOSED_BOOK)
        == {"english", "arabic", "bengali", "finnish", "indonesian", "korean", "russian", "swahili", "telugu"}
    )


HUMANEVAL = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


def test_codex_without_and_with_the_chat_format(tokenizer):
    assert prompts.codex_prompt(tokenizer, "tulu", HUMANEVAL, chat=False) == HUMANEVAL
    assert prompts.codex_prompt(tokenizer, "tulu", HUMANEVAL, chat=True) == (
        "<|user|>\n"
        "Complete the following python function.\n\n\n" + HUMANEVAL + "\n<|assistant|>\n"
        "Here is the completed function:\n\n\n" + HUMANEVAL
    )
    assert prompts.CODEX_STOPS == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def test_alpaca_farm_instruction_as_the_user_turn(tokenizer):
    instruction = "Rewrite the sentence in the passive voice.\n\nThe cat chased the mouse."
    assert tulu(tokenizer, instruction) == (
        "<|user|>\nRewrite the sentence in the passive voice.\n\nThe cat chased the mouse.\n<|assistant|>\n"
    )


def test_prefix_spacing_in_another_template():
    class Plain:  # a tokenizer whose template ends without a newline
        chat_template = "{{ messages[0]['content'] }}"
        bos_token = None

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "USER: " + messages[0]["content"] + " ASSISTANT:"

    assert prompts.chat_prompt(Plain(), "tokenizer", "hi", "A:") == "USER: hi ASSISTANT: A:"


@pytest.mark.parametrize("bos", [False, True])
def test_prompts_start_with_bos_only_when_the_protocol_says(tokenizer, bos):
    ids = encode(tokenizer, "<|user|>\nhi\n<|assistant|>\n", bos)
    assert (ids[0] == tokenizer.bos_token_id) is bos
    assert ids[int(bos) :] == tokenizer("<|user|>\nhi\n<|assistant|>\n", add_special_tokens=False).input_ids
