"""Local transformers models, as frozen readers and as trainable students.

Both classes load lazily (on the first cache miss), so a fully cached run never loads weights.
Generation is batched: prompts are sorted by length so each padded batch wastes little, and
the n samples of a prompt are drawn in the same forward passes, its prompt computed once (a
decoder-only model's prefill cache is repeated; ``generate`` encodes before it repeats).
A ``model_config`` node builds a randomly initialised model instead of loading one: the tiny
offline students of tests and smoke runs.
"""

import functools
import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
)

from lmcot.lm.base import LM, GenerationParams, cut_at_stop, sample_seed
from lmcot.lm.fingerprint import model_fingerprint
from lmcot.lm.kvcache import growing_cache
from lmcot.lm.messages import canonical, chat_messages
from lmcot.lm.prefix import common_prefix_length, extend, repeated, shared_groups
from lmcot.lm.sampling import keyed_sampling, row_seed, seeded, vocabulary_sampling
from lmcot.precision import model_dtype

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"  # LoRA adapters kept beside a student's base weights (lmcot.export)


class HFModel(LM):
    """Shared loading, batching and device handling of local transformers models.

    Args:
        name_or_path: hub id or local directory (also names the model in the cache key).
        tokenizer: where the tokenizer comes from, when not from ``name_or_path``.
        model_config: a transformers config (e.g. a ``T5Config`` node): build the model from it
            with random weights instead of loading ``name_or_path``.
        seed: seeds those random weights (and names them in the cache key) and fresh LoRA
            adapters; drawn on a forked RNG, so what ran before in the process does not matter.
        dtype: ``auto`` (bf16 where the device computes it natively, else fp32:
            :mod:`lmcot.precision`), ``fp32``/``bf16`` or a torch dtype name; the resolved
            dtype names the model in the cache key, so bf16 and fp32 answers never mix.
        device: ``auto`` picks CUDA when present.
        batch_size: prompts per forward pass (times n samples).
        chat_template: send prompts through the tokenizer's chat template, few-shot prompts
            as a multi-turn conversation (``lmcot.lm.messages.chat_messages``).
        system_role: with the chat template, the instruction as a system message; ``False``
            for templates that reject a system role (it then opens the first user turn).
        fewshot_as_multiturn: with the chat template, exemplars as user/assistant turns;
            ``False`` wraps the whole flat prompt as one user turn.
        lora: keyword arguments of a ``peft.LoraConfig``: train low-rank adapters only.
        trust_remote_code: run code shipped with a hub model; off unless you trust the source.
        cache: SQLite cache path; None disables caching.
        write_every: cache-miss chunk size (see ``LM``).
    """

    auto_class = AutoModelForCausalLM

    def __init__(
        self,
        name_or_path: str,
        tokenizer: str | None = None,
        model_config: PretrainedConfig | None = None,
        seed: int = 0,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 8,
        chat_template: bool = False,
        system_role: bool = True,
        fewshot_as_multiturn: bool = True,
        lora: dict | None = None,
        trust_remote_code: bool = False,
        cache: str | None = None,
        write_every: int = 16,
    ):
        super().__init__(cache=cache, write_every=write_every)
        self.name_or_path = str(name_or_path)
        self.tokenizer_path = str(tokenizer or name_or_path)
        self.model_config = model_config
        self.seed = seed
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.dtype = model_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.chat_template = chat_template
        self.system_role = system_role
        self.fewshot_as_multiturn = fewshot_as_multiturn
        # plain containers: PEFT writes its config as JSON when the adapters are exported
        self.lora = OmegaConf.to_container(lora) if OmegaConf.is_config(lora) else lora
        self.trust_remote_code = trust_remote_code
        self._model = self._tokenizer = None
        self.prefill_tokens = 0  # prompt positions run through the model (prefill)
        self.reused_tokens = 0  # prompt positions taken from a shared prefix cache instead

    @functools.cached_property
    def cache_id(self) -> str:
        """Names the model by content (``lmcot.lm.fingerprint``), never by where it lies."""
        if self.model_config is None:
            model = model_fingerprint(self.name_or_path)
        else:  # random weights: the architecture, the seed and the tokenizer decide them
            arch = self.model_config
            arch = arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)
            arch.pop("transformers_version", None)
            arch_id = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode())
            model = (
                f"{self.name_or_path}:random-init-{self.seed}-{arch_id.hexdigest()[:12]}"
                f":tok-{model_fingerprint(self.tokenizer_path)}"
            )
        return f"hf:{model}:{self.dtype}:chat={self.chat_template}"

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    def _load(self) -> None:
        log.info("loading %s", self.name_or_path)
        tok = AutoTokenizer.from_pretrained(
            self.tokenizer_path, trust_remote_code=self.trust_remote_code
        )
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        with seeded(self.seed):  # random weights and fresh adapters, whatever ran before
            if self.model_config is not None:
                model = self.auto_class.from_config(self.model_config)
                model = model.to(getattr(torch, self.dtype))
                # a fresh config knows nothing of the tokenizer; generation needs these ids
                for conf in (model.config, model.generation_config):
                    conf.pad_token_id = tok.pad_token_id
                    if model.config.is_encoder_decoder:
                        conf.decoder_start_token_id = tok.pad_token_id
            else:
                model = self.auto_class.from_pretrained(
                    self.name_or_path, dtype=self.dtype, trust_remote_code=self.trust_remote_code
                )
                adapter = Path(self.name_or_path, ADAPTER_DIR)
                if adapter.is_dir():  # a refined student: unmerged, as it was trained
                    if self.lora:
                        raise ValueError(f"{self.name_or_path} holds LoRA adapters already; "
                                         "load it with lora=None")  # fmt: skip
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, adapter)
            if self.lora:
                from peft import LoraConfig, get_peft_model

                model = get_peft_model(model, LoraConfig(**self.lora))
        self._tokenizer, self._model = tok, model.to(self.device).eval()

    def messages(self, prompt: str) -> list[dict]:
        """The chat messages for ``prompt`` under this model's chat options."""
        return chat_messages(prompt, self.system_role, self.fewshot_as_multiturn)

    def cache_prompt(self, prompt: str) -> str:
        # the messages, not the templated text: computing that would load the tokenizer
        return canonical(self.messages(prompt)) if self.chat_template else str(prompt)

    def format(self, prompt: str) -> str:
        """The text the model sees for ``prompt`` (chat template applied when configured)."""
        if not self.chat_template:
            return str(prompt)
        return self.tokenizer.apply_chat_template(
            self.messages(prompt), tokenize=False, add_generation_prompt=True
        )

    def _batches(self, prompts: list[str]):
        """Yield (original indices, encoded batch), grouping prompts of similar length."""
        texts = [self.format(p) for p in prompts]
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True)
            yield idx, batch.to(self.device)

    def decoding(self, params: GenerationParams, prompts: list[str], n: int) -> dict:
        """``generate``'s decoding arguments for ``n`` rows per prompt, prompt-major: greedy, or
        each row drawn from its own generator seeded by its key (:mod:`lmcot.lm.sampling`)."""
        if params.greedy:
            return {"do_sample": False}
        seeds = [row_seed(self.cache_prompt(p), sample_seed(params, j))
                 for p in prompts for j in range(n)]  # fmt: skip
        return keyed_sampling(params, seeds, self.model.generation_config.top_k)

    @torch.inference_mode()
    def _generate(self, prompts: list[str], params: GenerationParams, n: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in prompts]
        for idx, batch in self._batches(prompts):
            # n copies of each row, each drawing its own sample (an encoder runs per copy too)
            batch = {k: v.repeat_interleave(n, 0) for k, v in batch.items()}
            self.prefill_tokens += batch["input_ids"].numel()
            generated = self.model.generate(
                **batch,
                max_new_tokens=params.max_new_tokens,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                **self.decoding(params, [prompts[i] for i in idx], n),
            )
            texts = self.tokenizer.batch_decode(
                self._new_tokens(generated, batch), skip_special_tokens=True
            )
            for j, text in enumerate(texts):
                out[idx[j // n]].append(cut_at_stop(text, params.stop))
        return out

    def _sample(self, batch, params: GenerationParams, n: int, **overrides) -> torch.Tensor:
        """One ``generate`` of ``n`` samples per row from the whole vocabulary, drawn on the
        global RNG, which the RL step seeds (``overrides``: further ``generate`` arguments, or
        other decoding ones). Each row is repeated ``n`` times, as ``num_return_sequences``
        would (which ``generate`` refuses with greedy decoding, how our draw reaches it)."""
        return self.model.generate(
            **{k: v.repeat_interleave(n, 0) for k, v in batch.items()},
            max_new_tokens=params.max_new_tokens,
            stop_strings=list(params.stop) or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
            **{**vocabulary_sampling(params), **overrides},
        )

    @torch.no_grad()  # not inference_mode: RL feeds these ids to a forward that needs grads
    def rollout(self, prompts: list[str], params: GenerationParams, n: int = 1,
                logits: bool = False) -> dict:  # fmt: skip
        """Sample ``n`` completions per prompt as token ids, for RL; uncached, one ``generate``.

        The caller seeds the RNG (the weights change between calls, so a cache would be wrong).
        Returns ``prompt_ids``/``prompt_mask``, one row per prompt (as the model read them), and
        one row per sample, prompt-major (rows ``i*n .. i*n+n-1`` answer prompt ``i``):
        ``completion_ids`` (right padded), ``completion_mask`` (the tokens the model chose:
        through its EOS or the token that completed a stop string), ``texts`` (decoded, cut at
        the stop strings), ``finished`` (False: cut off by ``max_new_tokens``) and, with
        ``logits`` (else None), ``logits`` ``(N, T, V)``: the model's raw scores at each sampled
        position, those the samples were drawn from (before temperature).

        Samples come from the model's whole distribution (no top-k): ``generate`` otherwise
        keeps only the 50 likeliest tokens, and RL's ratios, KL estimates and policy gradient
        assume the samples come from the softmax whose log-probs it trains.
        """
        batch = self.tokenizer(
            [self.format(p) for p in prompts], return_tensors="pt", padding=True
        ).to(self.device)
        keep = {"output_logits": True, "return_dict_in_generate": True} if logits else {}
        generated, scores = self._sample(batch, params, n, **keep), None
        if logits:
            scores, generated = torch.stack(generated.logits, 1), generated.sequences
        completion = self._completion_ids(generated, batch)
        mask, finished, texts = [], [], []
        for ids in completion.tolist():
            length, done = self._chosen_length(ids, params.stop)
            mask.append([1] * length + [0] * (len(ids) - length))
            finished.append(done)
            texts.append(cut_at_stop(self.tokenizer.decode(ids[:length], skip_special_tokens=True),
                                     params.stop))  # fmt: skip
        return {
            "prompt_ids": batch["input_ids"],
            "prompt_mask": batch["attention_mask"],
            "completion_ids": completion,
            "completion_mask": torch.tensor(mask, device=completion.device),
            "texts": texts,
            "finished": finished,
            "logits": scores,
        }

    def _chosen_length(self, ids: list[int], stop: tuple[str, ...]) -> tuple[int, bool]:
        """(tokens the model chose, whether it ended by itself) of one sampled completion."""
        if stop and any(s in self.tokenizer.decode(ids, skip_special_tokens=True) for s in stop):
            for k in range(1, len(ids) + 1):  # the token that completed the first stop string
                if any(
                    s in self.tokenizer.decode(ids[:k], skip_special_tokens=True) for s in stop
                ):
                    return k, True
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        for k, token in enumerate(ids):
            if token in ends:  # EOS is chosen (and learnt); padding after a finish is not
                return k + (token == self.tokenizer.eos_token_id), True
        return len(ids), False

    def _completion_ids(self, generated: torch.Tensor, batch) -> torch.Tensor:
        return self._new_tokens(generated, batch)

    def _new_tokens(self, generated: torch.Tensor, batch) -> torch.Tensor:
        return generated[:, batch["input_ids"].shape[1] :]  # causal: drop the (left-padded) prompt


class CausalLM(HFModel):
    """A decoder-only model (SmolLM2, Llama, Qwen, ...); prompts are left-padded.

    Args:
        prefix_reuse: prefill a token prefix shared by the prompts of a call (few-shot
            exemplars, the k prompts of one SC question) once and reuse its key/value cache
            (:mod:`lmcot.lm.prefix`); off: every prompt is prefilled whole.
        *args, **kwargs: as :class:`HFModel`.
    """

    def __init__(self, *args, prefix_reuse: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix_reuse = prefix_reuse

    def _load(self) -> None:
        super()._load()
        self._tokenizer.padding_side = "left"  # generation continues right after the prompt

    def _prefix_batches(self, rows: list[list[int]], caps: list[int]):
        """Yield (indices, starts, cache, (ids, mask)) per batch: the cache holds the first
        ``starts[b]`` tokens of row ``indices[b]``, laid out as ``ids``/``mask`` say.

        ``caps[i]``: the longest prefix row i may take from the cache (its later tokens must
        run, e.g. for their logits). The prefix common to the whole call is prefilled once;
        in each batch (rows sorted by token ids, so prompts sharing a prefix are neighbours)
        each group of rows that shares more (:func:`shared_groups`) has that part prefilled
        once, and the cache rows are that group's.
        """
        if self.prefix_reuse:
            order = sorted(range(len(rows)), key=rows.__getitem__)
        else:  # the plain path: nothing shared, similar lengths together for little padding
            caps = [0] * len(rows)
            order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        common = max(0, min(common_prefix_length(rows), *caps))
        head = rows[order[0]][:common]
        base = growing_cache(self.model.config)  # the layer types the model expects
        if common:
            self._extend(base, torch.tensor([head]), torch.ones(1, common))
            self.reused_tokens -= common  # run once here, counted as reused by every row below
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            groups = shared_groups([rows[i] for i in idx], [caps[i] for i in idx], common)
            parts = [rows[idx[members[0]]][common:length] for members, length in groups]
            width = max(map(len, parts))
            ids = torch.tensor([head + [pad] * (width - len(p)) + p for p in parts], dtype=int)
            mask = torch.tensor([[1] * common + [0] * (width - len(p)) + [1] * len(p)
                                 for p in parts], dtype=int)  # fmt: skip
            cache = repeated(base, len(groups))
            if width:
                self._extend(cache, ids[:, common:], mask)
            group_of = torch.tensor([g for g, (members, _) in enumerate(groups) for _ in members])
            cache.batch_select_indices(group_of.to(self.device))
            starts = [length for members, length in groups for _ in members]
            self.reused_tokens += sum(starts) - sum(map(len, parts))
            yield idx, starts, cache, (ids[group_of], mask[group_of])

    def _sample(self, batch, params: GenerationParams, n: int, **overrides) -> torch.Tensor:
        """As :meth:`HFModel._sample`, each prompt prefilled once for its ``n`` samples
        (``generate`` repeats a prompt before its prefill); the cache is repeated instead."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        cache = growing_cache(self.model.config)
        if ids.shape[1] > 1:  # generate runs the last prompt token: it starts the sampling
            self._extend(cache, ids[:, :-1], mask[:, :-1])
        cache.batch_repeat_interleave(n)
        self.prefill_tokens += len(ids) * n
        repeated = {"input_ids": ids.repeat_interleave(n, 0),
                    "attention_mask": mask.repeat_interleave(n, 0)}  # fmt: skip
        return super()._sample(repeated, params, 1, cache=cache, **overrides)

    def _extend(self, cache, ids: torch.Tensor, mask: torch.Tensor, logits: bool = False):
        self.prefill_tokens += ids.numel()
        ids, mask = ids.to(self.device), mask.long().to(self.device)
        return extend(self.model, cache, ids, mask, logits=logits)

    @torch.inference_mode()
    def _generate(self, prompts: list[str], params: GenerationParams, n: int) -> list[list[str]]:
        if not self.prefix_reuse:
            return super()._generate(prompts, params, n)
        rows = self.tokenizer([self.format(p) for p in prompts])["input_ids"]
        pad = self.tokenizer.pad_token_id
        out: list[list[str]] = [[] for _ in prompts]
        # every row keeps at least its last token out of the cache: generate must run one
        for idx, starts, cache, (held, seen) in self._prefix_batches(
            rows, [len(r) - 1 for r in rows]
        ):
            suffixes = [rows[i][s:] for i, s in zip(idx, starts)]
            width = max(map(len, suffixes))
            ids = torch.cat(
                [held, torch.tensor([[pad] * (width - len(s)) + s for s in suffixes])], 1
            )
            mask = torch.cat(
                [seen, torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes])], 1
            )
            if width > 1:  # each row's own tokens but the last, once per prompt (not per sample)
                self._extend(cache, ids[:, held.shape[1] : -1], mask[:, :-1])
            cache.batch_repeat_interleave(n)
            self.prefill_tokens += len(idx) * n  # generate runs the last prompt token
            generated = self.model.generate(
                input_ids=ids.repeat_interleave(n, 0).to(self.device),
                attention_mask=mask.repeat_interleave(n, 0).to(self.device),
                cache=cache,
                max_new_tokens=params.max_new_tokens,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=pad,
                **self.decoding(params, [prompts[i] for i in idx], n),
            )
            texts = self.tokenizer.batch_decode(
                generated[:, ids.shape[1] :], skip_special_tokens=True
            )
            for j, text in enumerate(texts):
                out[idx[j // n]].append(cut_at_stop(text, params.stop))
        return out

    @torch.inference_mode()
    def _logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        # token ids of prompt and continuation apart, so the boundary is exact
        contexts = self.tokenizer([self.format(p) for p in prompts])["input_ids"]
        targets = self.tokenizer(continuations, add_special_tokens=False)["input_ids"]
        rows = [c + t for c, t in zip(contexts, targets)]
        pad = self.tokenizer.pad_token_id
        scores = [0.0] * len(rows)
        # the first continuation token is predicted at the last context position: it must run
        for idx, starts, cache, (_, seen) in self._prefix_batches(
            rows, [len(c) - 1 for c in contexts]
        ):
            suffixes = [rows[i][s:] for i, s in zip(idx, starts)]
            width = max(map(len, suffixes))
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes])
            mask = torch.cat(
                [seen, torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in suffixes])], 1
            )
            logits = self._extend(cache, ids, mask, logits=True).logits  # (B, T, V)
            for b, i in enumerate(idx):
                # the token at position t is predicted by the logits at t - 1; one row's
                # continuation at a time in fp32: a whole batch's (B, T, V) fp32 copies cost
                # 0.5 GB at the reader's batch of 16
                at = torch.arange(len(contexts[i]), len(rows[i])) - starts[b]
                logp = logits[b, at - 1].float().log_softmax(-1)
                scores[i] = logp.gather(-1, ids[b, at, None].to(self.device)).sum().item()
        return scores


class Seq2SeqLM(HFModel):
    """An encoder-decoder model (FLAN-T5, BART, ...)."""

    auto_class = AutoModelForSeq2SeqLM

    def _new_tokens(self, generated: torch.Tensor, batch) -> torch.Tensor:
        return generated  # the decoder output holds only new tokens

    def _completion_ids(self, generated: torch.Tensor, batch) -> torch.Tensor:
        return generated[:, 1:]  # without the decoder start token

    @torch.inference_mode()
    def _logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        scores = []
        for prompt, continuation in zip(prompts, continuations):
            enc = self.tokenizer(self.format(prompt), return_tensors="pt").to(self.device)
            self.prefill_tokens += enc["input_ids"].numel()
            labels = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")[
                "input_ids"
            ].to(self.device)
            logits = self.model(**enc, labels=labels).logits[0].float()
            scores.append(logits.log_softmax(-1).gather(-1, labels[0, :, None]).sum().item())
        return scores
