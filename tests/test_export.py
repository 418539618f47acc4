"""Exported students compute what was trained: refine's small update survives the export."""

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from lmcot.artifacts import artifact
from lmcot.export import export
from lmcot.lm.base import GenerationParams

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
PROMPTS = ["Question: Who wrote the novel?\nRationale:", "Question: Where is it?\nRationale:"]


def trained_bf16_policy(cfg, kd):
    """As refine holds it: the KD export in bf16 with fresh LoRA adapters, after a small
    RL-sized update: ~3e-4 of a weight, as a 16-step refine_dev run moves SmolLM2's (a bf16
    step is 4e-3 to 8e-3 of a weight)."""
    student = instantiate(cfg.student, name_or_path=str(kd.student), tokenizer=None,
                          model_config=None, dtype="bfloat16", lora=LORA, cache=None)  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in student.model.named_parameters():
            if "lora_B" in name:
                p.copy_(1.5e-5 * torch.randn_like(p))
    return student


def logits(student) -> torch.Tensor:
    batch = student.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return student.model(**batch).logits.float()


def distilled(cfg):
    """A (random) tiny Llama exported as the distill stage exports, to refine from."""
    kd = artifact(cfg, "distill")
    export(instantiate(cfg.student, cache=None), kd, {})
    return kd


def loaded(cfg, art):
    return instantiate(cfg.student, name_or_path=str(art.student), tokenizer=None,
                       model_config=None, dtype="bfloat16", lora=None, cache=None)  # fmt: skip


def test_a_refined_bf16_student_exports_unmerged_and_computes_what_was_trained(cfg_factory):
    cfg = cfg_factory("debug=smoke", "student=tiny_llama", config_name="train")
    kd = distilled(cfg)
    policy = trained_bf16_policy(cfg, kd)
    art = artifact(cfg, "refine")
    trained = logits(policy)
    greedy = GenerationParams(max_new_tokens=12, temperature=0.0)
    rationales = policy.generate(PROMPTS, greedy)

    export(policy, art, {}, merge=False)
    assert (art.student / "adapter" / "adapter_config.json").exists()
    student = loaded(cfg, art)
    assert torch.equal(logits(student), trained)
    assert student.generate(PROMPTS, greedy) == rationales

    # the merge this replaces: most of the update rounds away in the bf16 weights
    merged_art = artifact(cfg_factory("debug=smoke", "student=tiny_llama", "seed=1",
                                      config_name="train"), "refine")  # fmt: skip
    export(trained_bf16_policy(cfg, kd), merged_art, {}, merge=True)
    before, after = (load_file(a.student / "model.safetensors") for a in (kd, merged_art))
    adapted = [k for k in after if k.split(".")[-2] in LORA["target_modules"]]
    changed = [(after[k].float() != before[k].to(after[k].dtype).float()).float().mean()
               for k in adapted]  # fmt: skip
    assert adapted and sum(changed) / len(changed) < 0.25


def test_loading_a_refined_student_with_new_adapters_is_refused(cfg_factory):
    cfg = cfg_factory("debug=smoke", "student=tiny_llama", config_name="train")
    art = artifact(cfg, "refine")
    export(trained_bf16_policy(cfg, distilled(cfg)), art, {}, merge=False)
    student = instantiate(cfg.student, name_or_path=str(art.student), tokenizer=None,
                          model_config=None, lora=LORA, cache=None)  # fmt: skip
    with pytest.raises(ValueError, match="holds LoRA adapters already"):
        student.generate(PROMPTS, GenerationParams(max_new_tokens=1))  # loads the model
