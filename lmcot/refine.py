"""Stage 2, rationale refinement: RL of the distilled student against the reward registry.

One training step: (1) rollout: the policy samples rationales for a batch of training questions
(``group_size`` per question, one ``generate``); (2) the reward registry scores the decoded
rationales (the ``task`` aspect asks the reader, through its cache); (3) the algorithm turns
scores into advantages (:mod:`lmcot.algorithms`): ``PPO`` with a value head on the policy's
trunk, a per-token KL penalty in the reward and GAE; ``GRPO`` and ``RLOO`` relative to the other
samples of the same question, KL in the loss or in the reward; (4) a few epochs of
clipped-surrogate updates over minibatches of whole questions, each question's prompt computed
once for its samples (:mod:`lmcot.lm.grouped`). The loop is ours, not TRL's: TRL 1.x has no
PPO for encoder-decoders and its GRPO is decoder-only, and the paper's students are FLAN-T5.
The math lives in ``lmcot.rl``.

Reference model: with LoRA the reference is the policy with its adapters switched off
(PEFT's ``disable_adapter``), so no second copy is held; only a student without LoRA gets a
frozen copy. The policy starts from the KD export with fresh adapters from the student config.

Safety rails:
- a rationale without reward (every aspect None, e.g. NaN/inf scores the registry dropped) gets
  no gradient at all: its tokens leave the loss mask and its group's statistics;
- an empty rationale gets the step's lowest reward minus ``empty_penalty`` standard deviations
  of the step's rewards; one cut off by ``max_new_tokens`` gets no reward and no gradient
  (``mask_truncated``; TRL's ``mask_truncated_completions``);
- a mean KL to the reference above ``kl_limit``, in a step or in the probe, stops the run,
  naming the step and the KL; a non-finite loss stops it too, before it can reach the weights.

With a KL coefficient of 0 (beta = 0, RLOO's default, as DAPO trains) no loss or reward term
reads the reference, so a step runs no reference forward (one no-grad forward of its batch fewer);
the KL is then measured by the probe alone, exactly, every ``probe.every`` steps.

Dropout stays off during RL (the model is kept in eval mode): the PPO ratio must compare the
policy that sampled with the one being updated. Every step draws from torch's RNG forked and
seeded from (seed, step, rank), so a resumed run draws the same questions and samples as an
uninterrupted one without restoring generator states, and the global state is left untouched.
"""

import contextlib
import json
import logging
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from lmcot import artifacts, loggers, memory, rl
from lmcot.algorithms import Batch
from lmcot.data.example import Example
from lmcot.export import check_trained_keys, export_best
from lmcot.lm import grouped
from lmcot.lm.base import LM, GenerationParams
from lmcot.lm.hf import HFModel
from lmcot.lm.sampling import seeded
from lmcot.metrics import exact_match
from lmcot.precision import training_dtype, training_precision
from lmcot.prompts import FewShotPrompt, extract_answer, fit_prompts, token_counter
from lmcot.rewards.registry import RewardRegistry, RewardScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """The student RL trains in place (its ``.model``, LoRA or full) and how its forwards run;
    the reference is derived from it (the module doc).

    ``activation_checkpointing``: recompute each layer's activations in the backward pass
    (:func:`lmcot.memory.checkpoint_layers`: less memory, the same gradients).
    ``shared_prompt``: compute a question's prompt once for its group in every forward
    (:mod:`lmcot.lm.grouped`: the same log-probs); False runs every sample whole."""

    student: HFModel
    activation_checkpointing: bool = False
    shared_prompt: bool = True


@dataclass(frozen=True)
class Rollouts:
    """What each step samples: ``batch_size`` of the training ``examples`` (per rank under
    DDP) in the student's ``prompt``, the algorithm's ``group_size`` rationales each, of at most
    ``max_new_tokens`` at ``temperature`` (validation decodes greedily with the same prompt and
    budget). ``seed`` seeds every step's draws, with the step and the rank, and the probe's."""

    prompt: FewShotPrompt
    examples: list[Example]
    batch_size: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Updates:
    """How the algorithm's updates reach the weights: ``optimizer``, a partial optimiser given
    the trainable parameters (as groups: the critic's at the algorithm's ``value_lr``), with
    gradients clipped to ``max_grad_norm`` (None: unclipped); a mean KL to the reference above
    ``kl_limit``, a step's or the probe's, stops the run before the update (the module doc's
    rails)."""

    optimizer: partial
    max_grad_norm: float | None = 1.0
    kl_limit: float = 50.0


@dataclass(frozen=True)
class Validation:
    """What each epoch's validation asks of the policy's greedy rationales for the held-out
    questions (the val loader's, :func:`dataloaders`): their mean raw reward (``val/reward``)
    and, with a ``reader``, its exact match answering through ``answer_prompt`` (``val/em``)."""

    reader: LM | None = None
    answer_prompt: FewShotPrompt | None = None


@dataclass(frozen=True)
class Probe:
    """Every ``every`` steps (0: never), before the step, the policy samples one rationale for
    each of the first ``questions`` training questions with the same seed each time: their raw
    aspect means (``probe/<aspect>``) and the exact KL to the reference over the vocabulary,
    summed over a rationale's tokens (``probe/kl``). The curve that shows learning: each step's
    own reward is a mean over fresh questions, scored against a drifting normaliser."""

    every: int = 0
    questions: int = 8


@dataclass(frozen=True)
class Logs:
    """What is logged beside each step's metrics: every ``table_every`` steps (0: never) a table
    of the step's sample rationales with their scores, and the fixed ``probe``."""

    table_every: int = 10
    probe: Probe = Probe()


class ShapedReward:
    """The registry's aggregate with the rails of the module doc, in the reward's own units.

    A rationale without reward gets none (and no gradient); one cut off by ``max_new_tokens``
    gets none either when ``mask_truncated`` (TRL's ``mask_truncated_completions``: its score
    judges a fragment, not the rationale it would have become); an empty one the step's lowest
    reward minus ``empty_penalty`` of the step's reward standard deviations. A fixed penalty
    means nothing across reward settings: with ``reward.normalize`` the aggregate is a sum of
    nine z-scores (spread about 3), raw it is a sum of scores in [0, 1].
    """

    def __init__(self, registry: RewardRegistry, empty_penalty: float = 1.0,
                 mask_truncated: bool = True):  # fmt: skip
        self.registry = registry
        self.empty_penalty, self.mask_truncated = empty_penalty, mask_truncated

    def __call__(self, prompts, texts, finished, examples) -> tuple[list, list, RewardScores]:
        """(reward per sample, has-reward flags, the registry's scores)."""
        scores = self.registry(prompts, texts, examples=examples)
        rewards: list[float | None] = []
        for text, done, score in zip(texts, finished, scores.aggregate):
            empty, cut = not text.strip(), self.mask_truncated and not done
            rewards.append(None if empty or cut or score is None else float(score))
        real = [r for r in rewards if r is not None]
        floor = min(real, default=0.0) - self.empty_penalty * (
            statistics.pstdev(real) if len(real) > 1 and len(set(real)) > 1 else 1.0
        )
        rewards = [floor if not t.strip() else r for t, r in zip(texts, rewards)]
        return [0.0 if r is None else r for r in rewards], [r is not None for r in rewards], scores

    def raw_aggregate(self, prompts, texts, examples) -> list[float | None]:
        """The aggregate of the raw aspect scores, touching no running statistics: validation's
        reward, comparable from step to step (the rails left out: greedy rationales)."""
        raw = self.registry.score(prompts, texts, examples=examples)
        return self.registry.combine(raw, raw).aggregate


class RefineModule(pl.LightningModule):
    """RL refinement of the student; manual optimisation (rollout, score, several updates).

    Args:
        policy: the student trained in place and its forwards' options (:class:`Policy`).
        rollouts: what each step samples, and from which questions (:class:`Rollouts`).
        reward: the reward registry (``instantiate(cfg.reward, lm=reader)``) with its rails
            (:class:`ShapedReward`).
        algorithm: ``PPO``, ``GRPO`` or ``RLOO`` of :mod:`lmcot.algorithms`
            (``cfg.refine.algorithm``): advantages, losses, minibatches, the KL controller.
        updates: the optimiser and the rails around each update (:class:`Updates`).
        validation: the reader and its prompt for validation EM (:class:`Validation`; the
            default, no reader, logs the reward only).
        logs: sample tables and the fixed probe (:class:`Logs`).
    """

    def __init__(
        self,
        policy: Policy,
        rollouts: Rollouts,
        reward: ShapedReward,
        algorithm,
        updates: Updates,
        validation: Validation = Validation(),
        logs: Logs = Logs(),
    ):
        super().__init__()
        self.automatic_optimization = False
        self.student, self.reward, self.algorithm = policy.student, reward, algorithm
        self.rollouts, self.updates = rollouts, updates
        self.validation, self.logs = validation, logs
        self.shared_prompt = policy.shared_prompt
        self.count_tokens = token_counter(self.student)  # the rule that fits prompts everywhere
        gen = {**rollouts.prompt.generation, "max_new_tokens": rollouts.max_new_tokens,
               "temperature": rollouts.temperature}  # fmt: skip
        self.sampling = GenerationParams(**gen)
        self.greedy = GenerationParams(**{**gen, "temperature": 0.0})
        self.model = self.student.model.eval()  # a submodule: Lightning moves and saves it
        if policy.activation_checkpointing:
            memory.checkpoint_layers(self.model)
        if self.shared_prompt:
            grouped.use_grouped_attention(self.model)  # the grouped forwards' attention by parts
        self.lora = bool(self.student.lora)
        self.reference = None
        if not self.lora:  # no adapter to switch off: a frozen copy is the reference
            import copy

            self.reference = copy.deepcopy(self.model).requires_grad_(False)
        self.value_head = None
        if algorithm.value_head:
            self.value_head = nn.Linear(self.model.config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.strict_loading = False  # checkpoints hold the trained parameters only
        self.rl_step = 0
        self.probe_prompts = None  # (prompt ids, the reference's states of them): the probe's
        if algorithm.kl.value == 0 and not logs.probe.every:
            log.info(
                "refine: KL coef 0 and refine.probe.every=0: nothing measures the KL to "
                "the reference, and refine.kl_limit checks nothing (set probe.every)"
            )

    # ---- forward passes ----------------------------------------------------------------
    def token_logits(self, model, batch: Batch, values: bool = False):
        """Logits over the completion tokens ``(N, T, V)`` (and the trunk's states there)."""
        return grouped.completion_logits(
            model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, values,
            shared=self.shared_prompt,
        )  # fmt: skip

    def policy(self, batch: Batch, values: bool = False, entropy: bool = False):
        """(log-probs of the sampled tokens, entropy or None, values or None) under the policy,
        of ``logits / temperature``: the distribution rollouts sample from."""
        logits, hidden = self.token_logits(self.model, batch, values)
        logits = logits.float() / self.sampling.temperature
        picked = rl.selective_logprobs(logits, batch.completion_ids)
        spread = rl.entropy_from_logits(logits.detach()) if entropy else None
        # detached: the critic reads the policy's features, its loss never trains them
        value = self.value_head(hidden.detach().float()).squeeze(-1) if values else None
        return picked, spread, value

    @contextlib.contextmanager
    def as_reference(self):
        """The reference (the module doc): the frozen copy, or the policy with adapters off."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model

    @torch.no_grad()
    def reference_logits(self, batch: Batch) -> torch.Tensor:
        """The reference's ``logits / temperature`` over the completion tokens, in fp32."""
        with self.as_reference() as model:
            logits, _ = self.token_logits(model, batch)
        return logits.float() / self.sampling.temperature

    def reference_logp(self, batch: Batch) -> torch.Tensor:
        return rl.selective_logprobs(self.reference_logits(batch), batch.completion_ids)

    # ---- one RL step -------------------------------------------------------------------
    def step_examples(self) -> list[Example]:
        """This step's questions for this rank: a seeded draw, the same after a resume."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        g = torch.Generator().manual_seed(self.rollouts.seed * 100_003 + self.rl_step)
        order = torch.randperm(len(self.rollouts.examples), generator=g).tolist()
        wanted = order[: self.rollouts.batch_size * world][rank::world]
        return [self.rollouts.examples[i] for i in wanted]

    def training_step(self, _batch, batch_idx: int) -> None:
        self.model.eval()  # Lightning switches to train mode each epoch; dropout stays off
        memory.recompute_in_eval(self.model)  # marks checkpointed layers only: none when off
        probe = self.logs.probe
        if probe.every and self.rl_step % probe.every == 0:
            # to the loggers at this step alone: Lightning re-logs a step metric that was logged
            # once in an epoch at every later step of it, so a probe every 4 steps drew a
            # staircase of stale values in W&B (self.log's step axis is rl_step here)
            loggers.log_safely(self.loggers, "log_metrics", self.probe_policy(), step=self.rl_step)
        rank = self.trainer.global_rank
        # the step's samples and minibatch shuffles, without moving the global RNG
        with seeded(self.rollouts.seed * 1_000_003 + self.rl_step * 1_009 + rank, self.device):
            self.rollout_and_update()
        self.rl_step += 1

    def rollout_and_update(self) -> None:
        """Roll out, score, compute advantages and update: one RL step."""
        examples = self.step_examples()
        prompts, _ = fit_prompts(self.rollouts.prompt, examples, self.count_tokens)
        k = self.algorithm.group_size
        out = self.student.rollout(prompts, self.sampling, n=k)
        examples = [ex for ex in examples for _ in range(k)]
        prompts = [p for p in prompts for _ in range(k)]
        rewards, valid, scores = self.reward(prompts, out["texts"], out["finished"], examples)
        rewards = torch.tensor(rewards, device=self.device)
        valid = torch.tensor(valid, device=self.device)

        batch = Batch(out["prompt_ids"], out["prompt_mask"], out["completion_ids"],
                      out["completion_mask"].float(), None, None, None)  # fmt: skip
        # one minibatch per epoch: the first update's forward is the rollout policy's (as
        # TRL's with num_iterations=1), so it serves both the old log-probs and the gradient
        reuse = self.algorithm.minibatch_size >= len(rewards)
        with torch.set_grad_enabled(reuse):
            logp, entropy, live_values = self.policy(
                batch, values=self.value_head is not None, entropy=True
            )
        values = None if live_values is None else live_values.detach()
        batch.old_logp = logp.detach()
        chosen = batch.mask.clone()  # every chosen token, for the logged KL and entropy
        batch.mask = batch.mask * valid[:, None]  # no reward, no gradient
        kl = None  # beta = 0: nothing reads the reference, so it is not run (the probe's KL is)
        if self.algorithm.kl.value > 0:
            with torch.no_grad():
                batch.ref_logp = self.reference_logp(batch)
            kl = (rl.kl_estimate(batch.old_logp, batch.ref_logp, "k1") * chosen).sum(1).mean()
            kl = self.check_kl(kl.item())
        batch.advantages, batch.returns = self.algorithm.advantages(
            rewards, batch.old_logp, batch.ref_logp, values, batch.mask
        )
        batch.old_values = values
        critic_only = self.rl_step < self.algorithm.critic_warmup_steps
        stats = self.update(batch, forward=(logp, live_values) if reuse else None,
                            critic_only=critic_only)  # fmt: skip
        if not critic_only and kl is not None:
            self.algorithm.kl.update(kl, n_steps=len(rewards))
        stats |= self.diagnostics(batch, scores)
        self.log_step(scores, rewards, valid, kl, entropy, chosen, stats)
        self.maybe_log_table(examples, out["texts"], scores, rewards)

    def check_kl(self, kl: float) -> float:
        """The KL rail (the module doc): ``kl``, or the run stops before this step's update."""
        if kl > self.updates.kl_limit:
            raise RuntimeError(
                f"refine step {self.rl_step}: KL to the reference {kl:.3f} exceeds "
                f"refine.kl_limit={self.updates.kl_limit}; lower the learning rate or raise "
                "the KL coef"
            )
        return kl

    def update(self, batch: Batch, forward: tuple | None = None,
               critic_only: bool = False) -> dict[str, float]:  # fmt: skip
        """Several epochs of clipped updates over shuffled minibatches; mean stats. A minibatch
        holds whole questions (``minibatch_size // group_size`` of them, at least one), so each
        question's prompt is computed once in its forward.

        ``forward``: (log-probs, values) of the whole batch already computed with gradients,
        used by the first minibatch instead of a new forward (when it is the whole batch).
        ``critic_only``: the critic's warm-up, the value loss alone (the policy unchanged)."""
        optimizer = self.optimizers()
        stats: dict[str, list[float]] = {}
        questions = max(1, self.algorithm.minibatch_size // batch.group_size)
        for _ in range(self.algorithm.epochs):
            for index in torch.randperm(len(batch.prompt_ids)).split(questions):
                mini = batch.questions(index)
                if forward is not None:
                    rows = batch.sample_rows(index)
                    logp, values = (None if t is None else t[rows] for t in forward)
                    forward = None
                else:
                    logp, _, values = self.policy(mini, values=self.value_head is not None)
                loss, parts = self.algorithm.loss(logp, values, mini, critic_only)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"refine step {self.rl_step}: non-finite loss {loss}")
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(optimizer, gradient_clip_val=self.updates.max_grad_norm)
                optimizer.step()
                for name, value in {"loss": loss, **parts}.items():
                    stats.setdefault(name, []).append(float(value.detach()))
        return {name: statistics.fmean(values) for name, values in stats.items()}

    # ---- logging -----------------------------------------------------------------------
    @torch.no_grad()
    def probe_policy(self) -> dict[str, float]:
        """The fixed probe (:class:`Probe`): raw aspect means and the exact KL to the reference."""
        examples = self.rollouts.examples[: self.logs.probe.questions]
        prompts, _ = fit_prompts(self.rollouts.prompt, examples, self.count_tokens)
        seed = self.rollouts.seed * 1_000_003 + 999_983  # the same draws each time
        with seeded(seed, self.device):
            out = self.student.rollout(prompts, self.sampling, logits=True)
        batch = Batch(out["prompt_ids"], out["prompt_mask"], out["completion_ids"],
                      out["completion_mask"].float(), None, None, None)  # fmt: skip
        # the policy's scores are those the rollout drew from: no second forward
        policy = (out["logits"].float() / self.sampling.temperature).log_softmax(-1)
        reference = self.probe_reference_logits(batch).log_softmax(-1)
        kl = (policy.exp() * (policy - reference)).sum(-1)
        metrics = {"probe/kl": self.check_kl((kl * batch.mask).sum(1).mean().item())}
        raw = self.reward.registry.score(prompts, out["texts"], examples=examples)
        for aspect, values in raw.items():
            present = [v for v in values if v is not None]
            if present:
                metrics[f"probe/{aspect}"] = statistics.fmean(present)
        return metrics

    @torch.no_grad()
    def probe_reference_logits(self, batch: Batch) -> torch.Tensor:
        """:meth:`reference_logits` of the probe's completions; the reference's part of the
        probe's prompts (the same at every probe) is computed once a run and kept."""
        with self.as_reference() as model:
            kept = self.probe_prompts
            if kept is None or not torch.equal(kept[0], batch.prompt_ids):
                states = grouped.prompt_states(model, batch.prompt_ids, batch.prompt_mask)
                self.probe_prompts = kept = (batch.prompt_ids, states)
            logits = grouped.logits_after(model, kept[1], batch.prompt_ids, batch.prompt_mask,
                                          batch.completion_ids)  # fmt: skip
        return logits.float() / self.sampling.temperature

    def diagnostics(self, batch: Batch, scores: RewardScores) -> dict[str, float]:
        """What shows a broken step in its first minutes: the advantage over the first and the
        last quarter of a rationale's tokens (a critic at zero makes the late ones larger),
        the critic's explained variance, and each aspect's normalised reward."""
        first, last = rl.quarter_means(batch.advantages, batch.mask)
        out = {"advantage/first_quarter": first, "advantage/last_quarter": last}
        if batch.returns is not None:
            out["explained_variance"] = rl.explained_variance(batch.old_values, batch.returns,
                                                              batch.mask)  # fmt: skip
        if self.reward.registry.normalizes:
            for aspect, values in scores.normalized.items():
                present = [v for v in values if v is not None]
                if present:
                    out[f"rewards/{aspect}/normalized_mean"] = statistics.fmean(present)
        return out

    def log_step(self, scores, rewards, valid, kl, entropy, chosen, stats) -> None:
        """TRL's metric names: rewards/<aspect>/mean|std, reward, kl, entropy, clip_ratio ...;
        with groups, each spread within a question too (``group_std``): what the advantages see."""
        metrics, k = {}, self.algorithm.group_size
        for aspect, values in scores.aspects.items():
            present = [v for v in values if v is not None]
            if present:
                metrics[f"rewards/{aspect}/mean"] = statistics.fmean(present)
                metrics[f"rewards/{aspect}/std"] = statistics.pstdev(present)
            if k > 1 and (spreads := rl.group_stds(values, k)):
                metrics[f"rewards/{aspect}/group_std"] = statistics.fmean(spreads)
        kept = [r if v else None for r, v in zip(rewards.tolist(), valid.tolist())]
        if k > 1 and (spreads := rl.group_stds(kept, k)):  # TRL's frac_reward_zero_std
            metrics["reward_group_std"] = statistics.fmean(spreads)
            metrics["frac_reward_zero_std"] = sum(s == 0 for s in spreads) / len(spreads)
        shaped = rewards[valid]
        metrics |= {
            "reward": shaped.mean().item() if len(shaped) else float("nan"),
            "reward_std": shaped.std(unbiased=False).item() if len(shaped) else float("nan"),
            **({} if kl is None else {"kl": kl}),
            "kl_coef": self.algorithm.kl.value,
            "entropy": rl.masked_mean(entropy, chosen).item(),
            "completion_length": chosen.sum(1).mean().item(),
            "no_reward_fraction": 1 - valid.float().mean().item(),
            **stats,
        }
        self.log("reward", metrics.pop("reward"), prog_bar=True, batch_size=len(rewards))
        self.log_dict(metrics, batch_size=len(rewards))

    def maybe_log_table(self, examples, texts, scores, rewards) -> None:
        """Every ``logs.table_every`` steps, sample rationales with their per-aspect scores."""
        if not self.logs.table_every or self.rl_step % self.logs.table_every:
            return
        rows = scores.rows()
        columns = ["step", "id", "rationale", *rows[0], "reward"]
        data = [[self.rl_step, ex.id, text, *row.values(), r]
                for ex, text, row, r in zip(examples, texts, rows, rewards.tolist())]  # fmt: skip
        loggers.log_safely(self.loggers, "log_table", key="refine/samples", columns=columns,
                           data=data)  # fmt: skip

    # ---- validation --------------------------------------------------------------------
    def validation_step(self, examples: list[Example], batch_idx: int) -> None:
        """Reader EM with the current policy's greedy rationales, and their mean reward."""
        prompts, _ = fit_prompts(self.rollouts.prompt, examples, self.count_tokens)
        texts = self.student.rollout(prompts, self.greedy)["texts"]
        present = [s for s in self.reward.raw_aggregate(prompts, texts, examples) if s is not None]
        metrics = {"val/reward": statistics.fmean(present) if present else 0.0}
        reader, prompt = self.validation.reader, self.validation.answer_prompt
        if reader is not None:
            answers = reader.generate(
                [prompt.render(ex, rationale=t) for ex, t in zip(examples, texts)], prompt.params
            )
            metrics["val/em"] = statistics.fmean(
                exact_match(extract_answer(a[0]), ex.golds) for ex, a in zip(examples, answers)
            )
        self.log_dict(metrics, prog_bar=True, batch_size=len(examples))

    # ---- optimiser and checkpoints -----------------------------------------------------
    def configure_optimizers(self):
        critic = [] if self.value_head is None else list(self.value_head.parameters())
        ids = {id(p) for p in critic}
        policy = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": policy}]
        if critic:
            lr = getattr(self.algorithm, "value_lr", None)
            groups.append({"params": critic, **({"lr": lr} if lr else {})})
        return self.updates.optimizer(params=groups)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }  # LoRA: the adapters and value head; never the frozen base or reference
        checkpoint["refine"] = {"step": self.rl_step, "kl": self.algorithm.kl.state_dict(),
                                "reward": self.reward.registry.state_dict()}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_trained_keys(self, checkpoint["state_dict"], "the checkpoint resumed from")
        self.rl_step = checkpoint["refine"]["step"]
        self.algorithm.kl.load_state_dict(checkpoint["refine"]["kl"])
        self.reward.registry.load_state_dict(checkpoint["refine"]["reward"])


class Steps(torch.utils.data.Dataset):
    """``n`` empty batches: the training loop's clock (each step draws its own questions)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def dataloaders(steps_per_epoch: int, val_examples: list[Example]):
    """(train, val) loaders: step ticks, and the held-out questions as one list per batch."""
    train = DataLoader(Steps(steps_per_epoch), batch_size=None)
    val = DataLoader(val_examples, batch_size=max(1, len(val_examples)), collate_fn=list)
    return train, val


def run_refine(cfg: DictConfig) -> dict[str, float]:
    """Stage entry: RL-refine the KD student, export the best policy, or reuse the export.

    Holds the artifact's lock throughout, so parallel jobs with one key refine once. Under
    DDP/FSDP every rank refines and returns once rank zero's export is complete.
    """
    art = artifacts.artifact(cfg, "refine")
    with art.lock():
        if art.done:
            log.info("refined student exists, reusing %s (manifest.json says why)", art.student)
            return json.loads((art.student / artifacts.DONE).read_text())
        kd = artifacts.artifact(cfg, "distill")
        if not kd.done:
            raise FileNotFoundError(f"no distilled student at {kd.student}: run the distill "
                                    "stage first (stages=[teacher,distill,refine])")  # fmt: skip
        art.write_manifest()
        metrics = _refine(cfg, art, kd.student)
    artifacts.wait_for_rank_zero()  # evaluation reads the export
    return metrics


def _refine(cfg: DictConfig, art: artifacts.Artifact, kd: Path) -> dict[str, float]:
    out = art.dir
    r = cfg.refine
    examples = list(instantiate(cfg.data, split="train"))
    if len(examples) <= r.val_size:
        raise ValueError(
            f"refine.val_size={r.val_size} leaves no training questions of {len(examples)}"
        )
    train_examples, val_examples = examples[: -r.val_size], examples[-r.val_size :]
    # held as in distillation (lmcot.precision.training_dtype), computed in the trainer's precision
    student: HFModel = instantiate(
        cfg.student, name_or_path=str(kd), tokenizer=None, model_config=None, cache=None,
        dtype=training_dtype(cfg.student, cfg.trainer),
    )  # fmt: skip
    reader = instantiate(cfg.reader)
    module = RefineModule(
        Policy(student, r.activation_checkpointing, r.shared_prompt),
        Rollouts(instantiate(cfg.prompts.rationale), train_examples, r.batch_size,
                 r.max_new_tokens, r.temperature, cfg.seed),
        ShapedReward(instantiate(cfg.reward, lm=reader), r.empty_penalty, r.mask_truncated),
        instantiate(r.algorithm),
        Updates(instantiate(r.optimizer), r.max_grad_norm, r.kl_limit),
        Validation(reader, instantiate(cfg.prompts.guided)),
        Logs(r.log_table_every, Probe(**r.probe)),
    )  # fmt: skip
    best = r.export_on and ModelCheckpoint(dirpath=out / "checkpoints", filename="best",
                                           monitor=r.export_on, mode="max")  # fmt: skip
    last = ModelCheckpoint(dirpath=out / "checkpoints", save_top_k=0, save_last=True,
                           every_n_train_steps=1)  # fmt: skip
    run_loggers = loggers.instantiate_loggers(cfg.get("logger"), stage="refine")
    loggers.log_safely(run_loggers, "log_hyperparams", loggers.hparams(cfg))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, default_root_dir=out, precision=training_precision(cfg.trainer),
        callbacks=[c for c in (best, last, loggers.LogProgress("refine", unit="step")) if c],
        logger=loggers.guarded(run_loggers) or False,
        max_epochs=r.epochs, gradient_clip_val=None, num_sanity_val_steps=0, log_every_n_steps=1,
        accumulate_grad_batches=1,  # minibatches are the algorithm's (manual optimisation)
        use_distributed_sampler=False,
    )  # fmt: skip
    train, val = dataloaders(r.steps_per_epoch, val_examples)
    ckpt = out / "checkpoints" / "last.ckpt"
    trainer.fit(module, train, val, ckpt_path=ckpt if ckpt.exists() else None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # the policy of the epoch best on refine.export_on, or (null) the last step's
    # adapters kept unmerged: a bf16 merge rounds most of RL's small update away (lmcot.export)
    chosen = best.best_model_path if best else str(ckpt)
    return export_best(trainer, module, chosen, student, art, metrics, "refine", "refined",
                       merge=False)  # fmt: skip
