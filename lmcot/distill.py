"""Stage 1, rationale distillation: train the small LM on the rationales of the teacher.

The student learns (question + context) -> rationale from the kept teacher rows. Decoder-only
students get loss on the rationale tokens only; encoder-decoders read the source and decode the
rationale. Sources are fitted to the prompt's token budget by the rule inference uses
(:func:`lmcot.prompts.fit_prompt`), here never dropping a gold paragraph.
``objective=rationale_and_answer`` adds a second task on the same question with its own prompt
(instruction and ``Answer:`` slot, as in distilling step-by-step), so the student also learns
the answer.
Validation logs the rationale loss and, on a few held-out questions, the reader's EM when it
answers with the student's current rationales: the number the paper cares about.
"""

import json
import logging
from functools import partial

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lmcot import loggers, memory
from lmcot.artifacts import DONE, Artifact, artifact, distill_student_seed, wait_for_rank_zero
from lmcot.data.example import Example
from lmcot.export import check_trained_keys, export_best
from lmcot.lm.base import LM
from lmcot.lm.hf import HFModel
from lmcot.metrics import exact_match
from lmcot.precision import training_dtype, training_precision
from lmcot.prompts import (
    FewShotPrompt,
    PromptTooLong,
    TokenCounter,
    extract_answer,
    fit_prompt,
    fit_prompts,
    token_counter,
)
from lmcot.teacher import RationaleStore, teacher_path

log = logging.getLogger(__name__)
IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


def training_pairs(
    rows: list[dict],
    examples: dict[str, Example],
    prompt: FewShotPrompt,
    count_tokens: TokenCounter,
    objective: str = "rationale",
    answer_prompt: FewShotPrompt | None = None,
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(source, target) texts from kept teacher rows (a second task pair per row if asked), and
    counts: ``sources_cut`` (sources that lost context paragraphs to fit their budget) and
    ``rows_skipped`` (rows whose gold paragraphs alone exceed it: never trained on cut gold).
    """
    if objective not in ("rationale", "rationale_and_answer"):
        raise ValueError(f"distill.objective must be rationale|rationale_and_answer: {objective}")
    if objective == "rationale_and_answer" and answer_prompt is None:
        raise ValueError("distill.objective=rationale_and_answer needs distill.answer_prompt")
    pairs, counts = [], {"sources_cut": 0, "rows_skipped": 0}
    for row in rows:
        example = examples[row["id"]]
        gold = {title for title, _ in example.supporting_facts}
        rationale = " ".join(row["rationale"].split())  # one line: the prompt stops at "\n"
        tasks = [(prompt, " " + rationale)]
        if objective == "rationale_and_answer":
            tasks.append((answer_prompt, " " + example.answer))
        try:
            fitted = [(fit_prompt(p, example, count_tokens, gold), t) for p, t in tasks]
        except PromptTooLong as e:
            log.warning("teacher row %s skipped: %s", row["id"], e)
            counts["rows_skipped"] += 1
            continue
        counts["sources_cut"] += sum(dropped > 0 for (_, dropped), _ in fitted)
        pairs += [(source, target) for (source, _), target in fitted]
    if rows and not pairs:
        raise ValueError(
            f"all {len(rows)} teacher rows exceed prompts.rationale.max_prompt_tokens="
            f"{prompt.max_prompt_tokens} with their gold paragraphs: raise it"
        )
    if counts["sources_cut"] or counts["rows_skipped"]:
        log.info(
            "training sources: %d of %d cut to max_prompt_tokens=%s (distractors dropped), "
            "%d rows skipped",
            counts["sources_cut"], len(pairs), prompt.max_prompt_tokens, counts["rows_skipped"],
        )  # fmt: skip
    return pairs, counts


class PairCollator:
    """Tokenise (source, target) pairs into a padded training batch.

    Sources come fitted to their budget (:func:`training_pairs`) and are never cut here: a cut
    would lose the instruction or the question. Targets are cut from the right, and every
    target ends in EOS so the student learns to stop. Decoder-only sequences are padded on the
    left (with explicit ``position_ids``), so every target sits in the last columns and the
    loss needs logits there only (:func:`causal_lm_loss`).
    """

    def __init__(self, tokenizer, encoder_decoder: bool, max_target: int):
        self.tok, self.encoder_decoder = tokenizer, encoder_decoder
        self.max_target = max_target

    def __call__(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        sources = self.tok([s for s, _ in pairs])["input_ids"]
        targets = self.tok([t for _, t in pairs], add_special_tokens=False)["input_ids"]
        eos = [self.tok.eos_token_id]
        targets = [t[: self.max_target - 1] + eos for t in targets]
        if self.encoder_decoder:
            return {**self._pad(sources, sources), "labels": self._pad(targets, targets)["labels"]}
        # decoder-only: one sequence, loss on the target part only
        inputs = [s + t for s, t in zip(sources, targets)]
        labels = [[IGNORE] * len(s) + t for s, t in zip(sources, targets)]
        batch = self._pad(inputs, labels, left=True)
        batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
        return batch

    def _pad(self, inputs: list[list[int]], labels: list[list[int]], left: bool = False):
        width = max(map(len, inputs))

        def pad(row: list[int], value: int) -> list[int]:
            fill = [value] * (width - len(row))
            return fill + row if left else row + fill

        return {
            "input_ids": torch.tensor([pad(x, self.tok.pad_token_id) for x in inputs]),
            "attention_mask": torch.tensor([pad([1] * len(x), 0) for x in inputs]),
            "labels": torch.tensor([pad(y, IGNORE) for y in labels]),
        }


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy of a left-padded decoder-only batch, with logits computed only
    over the trailing columns that hold targets: the prompt's logits (most of the sequence, each
    a vocabulary-wide row) are never materialised. Equals ``model(**batch).loss``.
    """
    labels = batch["labels"]
    has_label = (labels != IGNORE).any(0).nonzero()
    first = int(has_label[0]) if len(has_label) else labels.shape[1] - 1
    # the column before the first target predicts it
    keep = min(labels.shape[1], labels.shape[1] - first + 1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), labels[:, labels.shape[1] - keep + 1 :].flatten(),
        ignore_index=IGNORE,
    )  # fmt: skip


class MultiHopDataModule(pl.LightningDataModule):
    """Teacher rationales as (source, target) pairs, split by question into train and val.

    Args:
        pairs_train: training pairs (built by :func:`training_pairs`).
        pairs_val: held-out pairs, for the validation loss.
        collate: a :class:`PairCollator`.
        batch_size: pairs per optimiser micro-step.
        seed: seeds the shuffle with a generator of its own, so the order of every epoch
            follows from it alone (not from what else drew from torch's global RNG).
    """

    def __init__(self, pairs_train, pairs_val, collate, batch_size: int = 8, seed: int = 0):
        super().__init__()
        self.pairs_train, self.pairs_val = pairs_train, pairs_val
        self.collate, self.batch_size = collate, batch_size
        self.shuffle = torch.Generator().manual_seed(seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.pairs_train, self.batch_size, shuffle=True,
                          collate_fn=self.collate, generator=self.shuffle)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.pairs_val, self.batch_size, collate_fn=self.collate)


class DistillModule(pl.LightningModule):
    """Trains the student's model on teacher rationales; validates loss and reader EM.

    Args:
        student: the small LM wrapper; its ``.model`` is trained in place.
        optimizer: a partial optimiser (``_partial_: true`` in config), given the parameters.
        scheduler: a partial LR scheduler, called with ``optimizer`` and ``num_training_steps``
            (the Trainer's estimate, so schedules fit any data size), or None.
        reader: the frozen large LM, for validation EM (None skips it).
        rationale_prompt: the student's input prompt.
        answer_prompt: the reader's LM-guided prompt.
        val_examples: held-out questions for validation EM.
        activation_checkpointing: recompute each layer's activations in the backward pass
            (:func:`lmcot.memory.checkpoint_layers`: less memory, the same gradients).
    """

    def __init__(
        self,
        student: HFModel,
        optimizer: partial,
        scheduler: partial | None = None,
        reader: LM | None = None,
        rationale_prompt: FewShotPrompt | None = None,
        answer_prompt: FewShotPrompt | None = None,
        val_examples: list[Example] | None = None,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.student, self.reader = student, reader
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.model = student.model.train()  # a submodule: Lightning moves and saves it
        if activation_checkpointing:
            memory.checkpoint_layers(self.model)
        self.rationale_prompt, self.answer_prompt = rationale_prompt, answer_prompt
        self.val_examples = val_examples or []
        self.lora = bool(student.lora)
        self.strict_loading = not self.lora  # LoRA checkpoints hold the adapters only

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.model.config.is_encoder_decoder:
            return self.model(**batch).loss
        return causal_lm_loss(self.model, batch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val/loss", self(batch), prog_bar=True, batch_size=len(batch["input_ids"]))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.reader is None or not self.val_examples:
            return
        with self.trainer.precision_plugin.forward_context():  # bf16-mixed: under autocast
            em = reader_em(self.student, self.reader, self.val_examples, self.rationale_prompt,
                           self.answer_prompt)  # fmt: skip
        self.log("val/em", em, prog_bar=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(
            params=[p for p in self.parameters() if p.requires_grad]
        )
        if self.scheduler_factory is None:
            return optimizer
        steps = self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer=optimizer, num_training_steps=steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.lora:  # the frozen base weights are the model's own: keep the adapters only
            trainable = {n for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if k in trainable
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_trained_keys(self, checkpoint["state_dict"], "the checkpoint resumed from")


@torch.no_grad()
def reader_em(
    student: HFModel,
    reader: LM,
    examples: list[Example],
    rationale_prompt: FewShotPrompt,
    answer_prompt: FewShotPrompt,
) -> float:
    """EM of the reader answering with the student's current (greedy, uncached) rationales."""
    was_training = student.model.training
    student.model.eval()
    prompts, _ = fit_prompts(rationale_prompt, examples, token_counter(student))
    # uncached: the weights change between calls
    rationales = student._generate(prompts, rationale_prompt.params, 1)
    student.model.train(was_training)
    answers = reader.generate(
        [answer_prompt.render(ex, rationale=r[0]) for ex, r in zip(examples, rationales)],
        answer_prompt.params,
    )
    return sum(
        exact_match(extract_answer(a[0]), ex.golds) for ex, a in zip(examples, answers)
    ) / len(examples)


def run_distill(cfg: DictConfig) -> dict[str, float]:
    """Stage entry: fit the student on the teacher JSONL, export it, or reuse the export.

    Holds the artifact's lock throughout, so parallel jobs with one key train once. Under
    DDP/FSDP every rank trains and returns once rank zero's export is complete.
    """
    art = artifact(cfg, "distill")
    with art.lock():
        if art.done:
            log.info("distilled student exists, reusing %s (manifest.json says why)", art.student)
            return json.loads((art.student / DONE).read_text())
        art.write_manifest()
        metrics = _distill(cfg, art)
    wait_for_rank_zero()  # the next stage reads the export
    return metrics


def _distill(cfg: DictConfig, art: Artifact) -> dict[str, float]:
    out = art.dir
    examples = {ex.id: ex for ex in instantiate(cfg.data, split="train")}
    store = RationaleStore(teacher_path(cfg))
    unfinished = len(set(examples) - store.done_ids())
    if unfinished:  # a killed teacher leaves a partial file: never train on it for good
        raise RuntimeError(
            f"{store.path} lacks {unfinished} of {len(examples)} training questions (the teacher "
            "stage was interrupted or has not run): run it first, e.g. stages=[teacher,distill]"
        )
    rows = store.kept()
    if not rows:
        raise RuntimeError(f"{store.path} has no kept rationales: nothing to distil")
    missing = sorted({r["id"] for r in rows} - set(examples))
    if missing:
        raise RuntimeError(f"{store.path} has ids not in the training data, e.g. {missing[:3]}")

    # hold out whole questions, so validation never sees a training question
    ids = sorted({r["id"] for r in rows})
    val_ids = set(ids[-max(1, int(len(ids) * cfg.distill.val_fraction)) :])
    prompt = instantiate(cfg.distill.prompt)
    # the trainer's precision decides the compute (bf16-mixed: autocast), the student's
    # training dtype what is held: fp32 what is trained, a LoRA student's frozen base in bf16
    seed = cfg.distill.seed  # the KD student's own, not the run's (experiment=refine_dev)
    pl.seed_everything(seed, workers=True, verbose=False)
    student: HFModel = instantiate(
        cfg.student, dtype=training_dtype(cfg.student, cfg.trainer), **distill_student_seed(cfg)
    )
    pairs = partial(training_pairs, examples=examples, prompt=prompt,
                    count_tokens=token_counter(student), objective=cfg.distill.objective,
                    answer_prompt=instantiate(cfg.distill.answer_prompt))  # fmt: skip
    encoder_decoder = student.model.config.is_encoder_decoder
    collate = PairCollator(student.tokenizer, encoder_decoder, cfg.distill.max_target_length)
    pairs_train, counts_train = pairs([r for r in rows if r["id"] not in val_ids])
    pairs_val, counts_val = pairs([r for r in rows if r["id"] in val_ids])
    micro, accumulate = micro_batches(cfg.distill.batch_size, cfg.distill.micro_batch_size)
    datamodule = MultiHopDataModule(pairs_train, pairs_val, collate, micro, seed=seed)
    val_examples = [examples[i] for i in sorted(val_ids)][: cfg.distill.val_em_limit]
    module = DistillModule(
        student,
        optimizer=instantiate(cfg.distill.optimizer),
        scheduler=instantiate(cfg.distill.scheduler) if cfg.distill.scheduler else None,
        reader=instantiate(cfg.reader) if val_examples else None,
        rationale_prompt=prompt,
        answer_prompt=instantiate(cfg.prompts.guided),
        val_examples=val_examples,
        activation_checkpointing=cfg.distill.activation_checkpointing,
    )
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", filename="best",
                                  monitor="val/loss", save_last=True)  # fmt: skip
    run_loggers = loggers.instantiate_loggers(cfg.get("logger"), stage="distill")
    loggers.log_safely(run_loggers, "log_hyperparams", loggers.hparams(cfg))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, default_root_dir=out, callbacks=[checkpoints, loggers.LogProgress("distill")],
        precision=training_precision(cfg.trainer),
        logger=loggers.guarded(run_loggers) or False,
        accumulate_grad_batches=cfg.trainer.get("accumulate_grad_batches", 1) * accumulate,
    )  # fmt: skip
    last = out / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.exists() else None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics |= {k: float(counts_train[k] + counts_val[k]) for k in counts_train}
    return export_best(trainer, module, checkpoints.best_model_path, student, art, metrics,
                       "distill", "distilled")  # fmt: skip


def micro_batches(batch_size: int, micro_batch_size: int | None) -> tuple[int, int]:
    """(pairs per forward pass, forward passes per optimiser step) for ``distill.batch_size``
    pairs per step: activations of a micro-batch, not of the whole batch, are held at once.

    >>> micro_batches(8, 4), micro_batches(8, None)
    ((4, 2), (8, 1))
    """
    micro = micro_batch_size or batch_size
    if micro < 1 or batch_size % micro:
        raise ValueError(
            f"distill.micro_batch_size={micro_batch_size} must divide distill.batch_size="
            f"{batch_size}"
        )
    return micro, batch_size // micro
