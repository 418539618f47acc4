"""One seed drives every draw: a stage's artifact follows from its key alone, never from
key-neutral settings or from what ran before in the process."""

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_cfg
from safetensors.torch import load_file

from lmcot.artifacts import artifact
from lmcot.export import load_trained
from train import train

LORA = "+student.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}"
TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=12", LORA, "decoding=[greedy]"]


def exported(tmp_path, name, *overrides, stages="[teacher,distill]"):
    """Bytes of the exported weights of the last stage, from a fresh cache."""
    cfg = compose_cfg(tmp_path / name, *TINY, f"stages={stages}", *overrides,
                      config_name="train")  # fmt: skip
    pl.seed_everything(cfg.seed)  # as the entry point does
    train(cfg)
    stage = stages.strip("[]").split(",")[-1]
    return (artifact(cfg, stage).student / "model.safetensors").read_bytes()


def test_a_key_neutral_setting_leaves_the_student_byte_identical(tmp_path):
    """Three epochs with validation EM on 2 questions or none (val_em_limit is not in the key)
    export the same bytes; another seed does not."""
    epochs = "trainer.max_epochs=3"
    with_em = exported(tmp_path, "a", epochs, "distill.val_em_limit=2")
    assert exported(tmp_path, "b", epochs, "distill.val_em_limit=0") == with_em
    assert exported(tmp_path, "c", epochs, "distill.val_em_limit=2", "seed=1") != with_em


def test_the_refined_student_does_not_depend_on_what_ran_before(tmp_path):
    """Fresh adapters and rollouts draw from the refine key's seed, not from the global RNG:
    refining right after distillation, or later over the reused KD student after other draws,
    exports the same bytes."""
    stages = "[teacher,distill,refine]"
    first = exported(tmp_path, "a", stages=stages)
    exported(tmp_path, "b")  # the KD student alone
    torch.manual_seed(12345)
    torch.rand(1000)  # other work's draws before the refine stage
    cfg = compose_cfg(tmp_path / "b", *TINY, f"stages={stages}", config_name="train")
    train(cfg)  # the KD student is reused; no reseeding in between
    assert (artifact(cfg, "refine").student / "model.safetensors").read_bytes() == first


def test_refinement_with_a_reward_signal_changes_the_student(tmp_path):
    stages = "[teacher,distill,refine]"
    cfg = compose_cfg(tmp_path, *TINY, f"stages={stages}", config_name="train")
    metrics = train(cfg)
    assert metrics["refine/reward_std"] > 0  # the rationales scored apart: advantages != 0
    # the refined student is the KD one plus adapters (lmcot.export), which start at B = 0
    adapters = load_file(artifact(cfg, "refine").student / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().max() > 0 for k, v in adapters.items() if "lora_B" in k)


def test_a_checkpoint_that_does_not_fit_fails_naming_the_keys(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)  # frozen: checkpoints leave it out
    state = {k: v for k, v in model.state_dict().items() if k.startswith("1.")}
    torch.save({"state_dict": state}, tmp_path / "fits.ckpt")
    load_trained(model, tmp_path / "fits.ckpt")
    renamed = {f"model.{k}": v for k, v in state.items()}
    torch.save({"state_dict": renamed}, tmp_path / "renamed.ckpt")
    with pytest.raises(RuntimeError, match=r"2 trained parameters missing .*'1.weight'.*"
                                           r"2 unknown keys"):  # fmt: skip
        load_trained(model, tmp_path / "renamed.ckpt")
