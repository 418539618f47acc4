"""The distillation module: pairs, collation, a tiny student learns, both architectures train."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot import preflight
from lmcot.data import synthetic
from lmcot.distill import (
    IGNORE,
    DistillModule,
    MultiHopDataModule,
    PairCollator,
    causal_lm_loss,
    training_pairs,
)
from lmcot.lm.base import GenerationParams
from lmcot.prompts import approximate_tokens, token_counter

PROMPTS = OmegaConf.load("conf/prompts/v1.yaml")


def tiny_student(cfg_factory, name):
    return instantiate(cfg_factory(f"student={name}").student)


@pytest.fixture
def rows_and_examples():
    examples = synthetic.load(split="train", num_train=8)
    rows = [{"id": ex.id, "rationale": " ".join(ex.supporting_sentences())} for ex in examples]
    return rows, {ex.id: ex for ex in examples}


def test_training_pairs_one_task_or_two(rows_and_examples):
    rows, examples = rows_and_examples
    prompt = instantiate(PROMPTS.rationale)
    pairs, counts = training_pairs(rows, examples, prompt, approximate_tokens)
    assert len(pairs) == 8 and counts == {"sources_cut": 0, "rows_skipped": 0}
    source, target = pairs[0]
    assert source.endswith("Rationale:") and examples[rows[0]["id"]].question in source
    assert target == " " + rows[0]["rationale"]
    answer_prompt = instantiate(PROMPTS.answer_task)
    both, _ = training_pairs(
        rows, examples, prompt, approximate_tokens, "rationale_and_answer", answer_prompt
    )
    assert len(both) == 16 and both[1][1] == " " + examples[rows[0]["id"]].answer
    assert both[1][0] != both[0][0] and both[1][0].endswith("Answer:")  # its own prompt
    with pytest.raises(ValueError, match="objective"):
        training_pairs(rows, examples, prompt, approximate_tokens, objective="answer")
    with pytest.raises(ValueError, match="answer_prompt"):
        training_pairs(rows, examples, prompt, approximate_tokens, "rationale_and_answer")


def test_decoder_only_loss_covers_the_rationale_only(cfg_factory):
    student = tiny_student(cfg_factory, "tiny_llama")
    collate = PairCollator(student.tokenizer, False, max_target=16)
    batch = collate([("Question: q? Rationale:", " because x."), ("Q2 Rationale:", " y")])
    target_ids = student.tokenizer(" because x.", add_special_tokens=False)["input_ids"]
    labels = batch["labels"][0][batch["labels"][0] != IGNORE].tolist()
    assert labels == target_ids + [student.tokenizer.eos_token_id]  # rationale + EOS, no prompt
    mask = batch["attention_mask"]
    assert mask[1].sum() < mask[0].sum() and mask[1, 0] == 0 and mask[1, -1] == 1  # left padding
    assert batch["position_ids"][1, -1] == mask[1].sum() - 1  # positions count real tokens only


def test_target_window_loss_equals_the_full_sequence_loss(cfg_factory):
    student = tiny_student(cfg_factory, "tiny_llama")
    collate = PairCollator(student.tokenizer, False, max_target=16)
    batch = collate(
        [
            ("Question: where was Arlo born? Rationale:", " Arlo was born in Lyon."),
            ("Q2 Rationale:", " y"),
            ("A much longer source text than the others", " z"),
        ]
    )
    full = student.model(**batch).loss  # logits over every column
    assert torch.allclose(causal_lm_loss(student.model, batch), full, atol=1e-5)


def test_sources_are_never_cut_targets_are_cut_from_the_right(cfg_factory):
    student = tiny_student(cfg_factory, "tiny_t5")
    collate = PairCollator(student.tokenizer, True, max_target=3)
    batch = collate([("one two three four five six seven", " a b c d e f")])
    source_ids = student.tokenizer("one two three four five six seven")["input_ids"]
    assert batch["input_ids"][0].tolist() == source_ids  # fitted already (training_pairs)
    assert (
        batch["labels"].shape[1] == 3 and batch["labels"][0, -1] == student.tokenizer.eos_token_id
    )


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_t5"])
def test_tiny_student_loss_falls_and_it_generates(cfg_factory, rows_and_examples, tmp_path, name):
    rows, examples = rows_and_examples
    pl.seed_everything(0)  # batch order: the loss ratio below is then reproducible
    student = tiny_student(cfg_factory, name)
    prompt = instantiate(PROMPTS.rationale, max_prompt_tokens=130)  # gold only: a fast test
    pairs, counts = training_pairs(rows[:4], examples, prompt, token_counter(student))
    assert len(pairs) == 4 and counts["sources_cut"] == 4
    collate = PairCollator(student.tokenizer, student.model.config.is_encoder_decoder, 32)
    module = DistillModule(
        student, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), scheduler=None
    )
    before = module(collate(pairs)).item()
    trainer = pl.Trainer(
        max_epochs=20, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=MultiHopDataModule(pairs, pairs[:2], collate, batch_size=4))
    after = module(collate(pairs)).item()
    assert after < 0.65 * before, (before, after)  # measured, seed 0: 0.11 (llama), 0.43 (t5)
    [[text]] = student._generate(
        ["Question: q? Rationale:"], GenerationParams(max_new_tokens=4), 1
    )
    assert isinstance(text, str)


def test_lora_student_trains_adapters_only(cfg_factory):
    student = instantiate(
        cfg_factory(
            "student=tiny_llama",
            "+student.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}",
        ).student
    )
    trainable = {n for n, p in student.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    module = DistillModule(student, optimizer=lambda params: torch.optim.AdamW(params))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {f"model.{n}" for n in trainable}
    assert not module.strict_loading


def test_micro_batches_accumulate_to_one_optimiser_step_per_batch(cfg_factory):
    """batch_size=4 in micro-batches of 2: 11 training pairs are 6 forward passes, 3 steps."""
    from lmcot.artifacts import artifact
    from train import train

    cfg = cfg_factory("debug=smoke", "student=tiny_llama", "data.num_train=12",
                      "distill.val_em_limit=0", "distill.batch_size=4",
                      "distill.micro_batch_size=2", "stages=[teacher,distill]",
                      config_name="train")  # fmt: skip
    train(cfg)
    last = artifact(cfg, "distill").dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    bad = cfg_factory("debug=smoke", "distill.micro_batch_size=3", "stages=[teacher,distill]",
                      config_name="train")  # fmt: skip
    with pytest.raises(ValueError, match="micro_batch_size=3 must divide"):
        preflight.check(bad, ["teacher", "distill"])  # at start, before the teacher stage
