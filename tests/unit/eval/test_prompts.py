from tulu_quant.eval import prompts

ITEM = {
    "question": "What is 1 + 1?",
    "choices": ["1", "2", "3", "4"],
    "answer": "B",
    "subject": "elementary_mathematics",
}


def test_mmlu_prompt_in_tulu_format(tokenizer):
    shot = {**ITEM, "question": "What is 0 + 0?", "answer": "A"}
    user = prompts.mmlu_user(ITEM["subject"], [shot], ITEM)
    text = prompts.chat_prompt(tokenizer, "tulu", user, prompts.MMLU_PREFIX)
    assert text == (
        "<|user|>\nThe following are multiple choice questions (with answers) about  elementary mathematics.\n\n"
        "What is 0 + 0?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: A\n\n"
        "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:\n<|assistant|>\nThe answer is:"
    )


def test_prefix_spacing_follows_open_instruct():
    class Plain:  # a tokenizer whose template ends without a newline
        chat_template = "{{ messages[0]['content'] }}"
        bos_token = None

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "USER: " + messages[0]["content"] + " ASSISTANT:"

    assert prompts.chat_prompt(Plain(), "tokenizer", "hi", "A:") == "USER: hi ASSISTANT: A:"


def test_gsm_tydiqa_and_codex_prompts():
    exemplar = {"question": "Q1?", "cot_answer": "Think. So the answer is 3.", "short_answer": "3"}
    assert prompts.gsm_user(" How many? ", [exemplar], cot=True) == (
        "Answer the following questions.\n\nQuestion: Q1?\nAnswer: Think. So the answer is 3.\n\nQuestion: How many?"
    )
    assert prompts.gsm_user("How many?", [exemplar], cot=False).startswith(
        "Answer the following questions.\n\nQuesion: Q1?\nAnswer: 3\n\n"
    )
    item = {"context": "Paris is in France.", "question": "Where is Paris?", "answers": ["France"]}
    user, prefix = prompts.tydiqa_user(item, [item], with_passage=True)
    assert prefix == "Answer:" and user == (
        "Answer the following question based on the information in the given passage.\n\n"
        "Passage: Paris is in France.\nQuestion: Where is Paris?\nAnswer: France\n\n"
        "Passage: Paris is in France.\nQuestion: Where is Paris?\n"
    )
    user, _ = prompts.tydiqa_user(item, [], with_passage=False)
    assert user == "Answer the following question.\n\nQuestion: Where is Paris?\n"
    assert prompts.codex_user("def f():\n") == "Complete the following python function.\n\n\ndef f():\n"
