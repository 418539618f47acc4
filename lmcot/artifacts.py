"""Artifact identity: where each stage keeps what it made, and exactly what decides it.

Runs get fresh timestamped Hydra directories, but a stage's artifacts (teacher rationales,
student checkpoints and exports) live under ``paths.cache_dir/<stage>/<name>-<key>/``. The key
is a hash of exactly what determines the output, and of nothing else:

- the training rows themselves (their content, not the config fields that selected them), so
  evaluation-only fields (``data.limit``, ``data.num_examples``) never retrain anything;
- the prompt text the stage renders (the whole prompt node, not only its version; a training
  stage leaves out the prompt's ``generation``, which only decides what is generated from it
  later, except the stop strings that end RL rollouts);
- every model by content fingerprint (:mod:`lmcot.lm.fingerprint`), never by path;
- the stage's own config and the trainer settings that change the weights
  (:data:`WEIGHT_KNOBS`; progress bars, loggers, accelerator and checkpoint paths stay out);
- the key of the artifact it was made from (teacher -> distill -> refine).

So a sweep over evaluation settings, a moved cache or another machine reuses the same teacher
file and students. Each artifact directory holds ``manifest.json`` (stage, key, when, the key's
inputs: why it was reused) and a file lock, so parallel jobs with one key make it once.
"""

import hashlib
import inspect
import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from filelock import FileLock
from hydra.utils import get_class, get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from lmcot import __version__
from lmcot.lm.fingerprint import GGUF_REF, model_fingerprint
from lmcot.precision import model_dtype, training_dtype, training_precision
from lmcot.rewards.base import scorer_class

log = logging.getLogger(__name__)
DONE = "lmcot_done.json"  # written last into an exported student: the export is complete

# Trainer settings that change the trained weights; the rest (accelerator, progress bar,
# logging cadence, sanity checks) only change how training is watched or where it runs.
WEIGHT_KNOBS = (
    "max_epochs", "max_steps", "min_epochs", "min_steps", "precision", "devices", "num_nodes",
    "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
    "limit_train_batches", "limit_val_batches", "val_check_interval", "check_val_every_n_epoch",
)  # fmt: skip
# Model-node fields that change no output: where it runs, batching, its response cache.
MODEL_RUNTIME_FIELDS = (
    "device", "batch_size", "cache", "write_every", "base_url", "api_key_env", "max_concurrency",
    "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "trust_remote_code",
)  # fmt: skip


def config_hash(*nodes) -> str:
    """First 12 hex digits of the SHA-256 of ``nodes`` (config nodes resolved, or plain values).

    >>> config_hash({"lr": 1e-4}, 3) == config_hash(OmegaConf.create({"lr": 1e-4}), 3)
    True
    """
    plain = [
        OmegaConf.to_container(n, resolve=True) if OmegaConf.is_config(n) else n for n in nodes
    ]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_identity(node: DictConfig) -> dict:
    """A model config node as the key sees it: content fingerprints instead of paths, and
    without the fields that change no output (:data:`MODEL_RUNTIME_FIELDS`).

    ``name_or_path`` and ``tokenizer`` are read *unresolved*, so a GGUF shipped in a package
    is named by its file's content without being converted.
    """
    raw = OmegaConf.to_container(node, resolve=False)
    identity = {}
    for key, value in raw.items():
        if key in MODEL_RUNTIME_FIELDS:
            continue
        if key == "dtype":  # as it resolves here: a bf16 and an fp32 model answer differently
            identity[key] = model_dtype(node[key], node.get("device"))
            continue
        if key in ("name_or_path", "tokenizer") and value is not None:
            if raw.get("model_config") is None or key == "tokenizer":
                identity[key] = model_fingerprint(_resolve(node, key, value))
            else:  # random init: the name is only a label, the config decides the weights
                identity[key] = value
        else:  # resolved one field at a time: resolving the node would convert the GGUF
            value = node[key]
            plain = OmegaConf.is_config(value)
            identity[key] = OmegaConf.to_container(value, resolve=True) if plain else value
    return identity


def student_identity(node: DictConfig, trainer: DictConfig) -> dict:
    """A student as a training key sees it: the dtype it trains in (:func:`training_dtype`),
    not the one it later generates in."""
    return model_identity(node) | {"dtype": training_dtype(node, trainer)}


def _resolve(node: DictConfig, key: str, raw: str) -> str:
    # the GGUF interpolation stays unresolved (resolving converts the model); others resolve
    return raw if GGUF_REF.match(str(raw)) else str(node[key])


@lru_cache(maxsize=8)
def _rows_fingerprint(data_json: str) -> tuple[str, int]:
    examples = instantiate(OmegaConf.create(json.loads(data_json)), split="train")
    digest = hashlib.sha256()
    for ex in examples:
        row = [ex.id, ex.question, ex.context, ex.answer, ex.aliases, ex.supporting_facts,
               ex.type]  # fmt: skip
        digest.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    return digest.hexdigest()[:16], len(examples)


def training_rows(cfg: DictConfig) -> dict:
    """Fingerprint and size of the training split, by the rows' content (once per process)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    sha, n = _rows_fingerprint(json.dumps(data, sort_keys=True))
    return {"sha256": sha, "n": n}


def trainer_knobs(cfg: DictConfig) -> dict:
    """The trainer settings of :data:`WEIGHT_KNOBS` that the config sets, the precision as it
    resolves on this machine (``auto``: bf16-mixed or fp32 train different weights)."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    knobs = {k: trainer[k] for k in WEIGHT_KNOBS if k in trainer}
    return knobs | {"precision": training_precision(cfg.trainer)}


def is_rank_zero() -> bool:
    """Whether this process writes: always outside distributed training; under DDP/FSDP only
    global rank 0. Lightning sets the rank from the launcher's environment (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``) at import and from the strategy once it is set up, so
    this also holds in stages that run outside a Trainer (teacher, evaluate)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def wait_for_rank_zero() -> None:
    """Hold every rank of the process group here until all arrive; at once without one.

    A training stage calls it after rank zero's export, so no rank starts the next stage before
    the student it reads is complete. A barrier, not a wait on the done marker: if rank zero
    dies, its closed connection fails the others at once instead of after a timeout. Under
    Lightning's launcher the group exists from the first ``fit`` on, in every rank alike (rank
    1 starts then), and a stage that reuses its export does so on every rank (one that trains
    needs all ranks in its ``fit``), so the ranks meet at the same calls.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def write_atomic(path: Path, text: str) -> None:
    """Write beside ``path``, then rename: a kill or a full disk leaves the old file or none,
    never a cut one (manifests, repaired teacher files, ``results.json``, which a multirun
    reads to skip finished jobs)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Artifact:
    """One stage's output directory for one key.

    Attributes:
        stage: ``teacher``, ``distill`` or ``refine``.
        dir: ``paths.cache_dir/<stage>/<name>-<key>``.
        key: hash of ``inputs``.
        inputs: what decides the output (see the module doc); written to the manifest.
    """

    stage: str
    dir: Path
    key: str
    inputs: dict

    @property
    def student(self) -> Path:
        """The exported student (a plain ``from_pretrained`` directory) of a training stage."""
        return self.dir / "student"

    @property
    def done(self) -> bool:
        """A training stage's export is complete (its marker is written last)."""
        return (self.student / DONE).exists()

    def lock(self) -> FileLock:
        """Held while the artifact is made: a parallel job with the same key waits, then reuses.

        The lock file lives beside the directory, so a stale directory can be deleted freely.
        Only rank zero takes it: under DDP the other ranks are started by rank zero while it
        holds the lock, and train inside it with rank zero (they never write the artifact).
        """
        if not is_rank_zero():
            return nullcontext()
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir) + ".lock")

    def write_manifest(self, **extra) -> None:
        """``manifest.json``: what made this artifact, when, and the inputs of its key.

        Written when the artifact is first started; a later call adds ``extra`` (e.g. the
        metrics of a finished export) and keeps the original creation time. Rank zero only.
        """
        if not is_rank_zero():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "manifest.json"
        if path.exists():
            extra = {**json.loads(path.read_text()), **extra}
        manifest = {"stage": self.stage, "key": self.key, "lmcot": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": self.inputs,
                    **extra}  # fmt: skip
        write_atomic(path, json.dumps(manifest, indent=2, default=str) + "\n")


def _artifact(cfg: DictConfig, stage: str, name: str, inputs: dict) -> Artifact:
    key = config_hash(inputs)
    return Artifact(stage, Path(cfg.paths.cache_dir) / stage / f"{name}-{key}", key, inputs)


def teacher_artifact(cfg: DictConfig) -> Artifact:
    """The teacher's rationales: training rows, the teacher's config (its prompt text included)
    and, when the teacher calls one, the reader."""
    cls = get_class(cfg.teacher._target_)
    teacher = OmegaConf.to_container(cfg.teacher, resolve=True)
    teacher.pop("chunk_size", None)  # how often rows are written, not what they are
    inputs = {"train": training_rows(cfg), "teacher": teacher}
    if getattr(cls, "needs_reader", True):
        inputs["reader"] = model_identity(cfg.reader)
    name = cls.__name__.removesuffix("Teacher").lower()
    return _artifact(cfg, "teacher", f"{cfg.data._target_.split('.')[-2]}-{name}", inputs)


def trained_prompt(node) -> dict:
    """A prompt node as a training key sees it: without ``generation``, which decides only
    what is later generated from the prompt (distillation's logged EM, evaluation's rationale
    length), not what is trained on it."""
    prompt = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return {k: v for k, v in prompt.items() if k != "generation"}


def rollout_generation(cfg: DictConfig) -> dict:
    """The rationale prompt's generation settings that RL rollouts and validation keep (stop
    strings, top-p); length and temperature come from ``refine`` itself."""
    generation = OmegaConf.to_container(cfg.prompts.rationale.generation, resolve=True)
    return {k: v for k, v in generation.items() if k not in ("max_new_tokens", "temperature")}


def distill_artifact(cfg: DictConfig) -> Artifact:
    """The distilled student: its teacher's rationales, the student model, the rationale prompt
    the student reads (not its generation settings), the distillation config and the trainer
    knobs that change weights."""
    distill = OmegaConf.to_container(cfg.distill, resolve=True)
    distill.pop("val_em_limit", None)  # a logged metric; checkpoints are chosen on val/loss
    distill.pop("activation_checkpointing", None)  # memory: the same gradients (lmcot.memory)
    distill.pop("seed")  # keyed below as the run's seed was before distillation had its own
    for name in ("prompt", "answer_prompt"):
        distill[name] = trained_prompt(distill[name])
    inputs = {
        "teacher": teacher_artifact(cfg).key,
        "student": student_identity(cfg.student, cfg.trainer) | distill_student_seed(cfg),
        "prompt": trained_prompt(cfg.prompts.rationale),
        "distill": distill,
        "trainer": trainer_knobs(cfg),
        "seed": cfg.distill.seed,
    }
    return _artifact(cfg, "distill", _model_name(cfg.student), inputs)


def distill_student_seed(cfg: DictConfig) -> dict:
    """The student's own seed field (fresh adapters) as distillation sets it, ``distill.seed``:
    what the stage instantiates and what its key names."""
    return {"seed": cfg.distill.seed} if "seed" in cfg.student else {}


def refine_artifact(cfg: DictConfig) -> Artifact:
    """The RL-refined student: its KD student, the algorithm, the reward (aspects, weights,
    scorers), the rollouts' stop strings and the reader that answers for the task reward and
    the validation EM (which picks the exported checkpoint under ``refine.export_on=val/em``)."""
    refine = with_code_defaults(OmegaConf.to_container(cfg.refine, resolve=True))
    refine.pop("log_table_every", None)  # how often samples are logged
    refine.pop("probe", None)  # logged only: its draws leave the RNG and the reward's statistics
    refine.pop("activation_checkpointing", None)  # memory: the same gradients (lmcot.memory)
    inputs = {
        "distill": distill_artifact(cfg).key,
        "refine": refine,
        "rollout": rollout_generation(cfg),
        "reward": _without_runtime(reward_identity(cfg.reward)),
        "reader": model_identity(cfg.reader),
        "prompt": OmegaConf.to_container(cfg.prompts.guided, resolve=True),
        "trainer": trainer_knobs(cfg),
        "seed": cfg.seed,
    }
    return _artifact(cfg, "refine", _model_name(cfg.student), inputs)


def with_code_defaults(tree):
    """``tree`` with every ``lmcot.*`` ``_target_`` node's unset constructor arguments written
    in from the code: a changed code default changes the key instead of silently reusing an
    artifact made under the old one (it once reused an RL student trained on another reward).
    Naming a default in ``conf/`` keeps the key. Other libraries' defaults are versioned with
    them; ``lm`` and ``aspect`` are filled in by whoever builds the node.

    >>> with_code_defaults({"_target_": "lmcot.rl.FixedKLController", "coef": 0.1})["coef"]
    0.1
    """
    if isinstance(tree, list):
        return [with_code_defaults(v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    tree = {k: with_code_defaults(v) for k, v in tree.items()}
    target = tree.get("_target_")
    if isinstance(target, str) and target.startswith("lmcot."):
        tree = _code_defaults(get_object(target)) | tree
    return tree


def _code_defaults(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in ("lm", "aspect")
    }


def reward_identity(node: DictConfig) -> dict:
    """The reward as a key sees it: :func:`with_code_defaults`, and each ``make_scorer`` node
    with the defaults of the class it builds (``make_scorer`` passes its options through)."""
    reward = with_code_defaults(OmegaConf.to_container(node, resolve=True))
    reward["scorers"] = {
        aspect: _code_defaults(scorer_class(scorer["backend"], aspect)) | scorer
        if isinstance(scorer, dict) and "backend" in scorer else scorer
        for aspect, scorer in reward["scorers"].items()
    }  # fmt: skip
    return reward


def _without_runtime(tree):
    """``tree`` without :data:`MODEL_RUNTIME_FIELDS` at any depth (a scorer's score cache path,
    a judge's batch size): they change where answers are kept, not what they are.

    >>> _without_runtime({"scorers": {"fluency": {"cache": "/home/u/r.sqlite", "stride": 2}}})
    {'scorers': {'fluency': {'stride': 2}}}
    """
    if isinstance(tree, dict):
        return {k: _without_runtime(v) for k, v in tree.items() if k not in MODEL_RUNTIME_FIELDS}
    if isinstance(tree, list):
        return [_without_runtime(v) for v in tree]
    return tree


def _model_name(node: DictConfig) -> str:
    raw = str(OmegaConf.to_container(node, resolve=False)["name_or_path"])
    if match := GGUF_REF.match(raw):
        raw = match.group(2)
    return Path(raw).name.split(".")[0].lower()


# stage -> its artifact; stages that train export a student into ``<dir>/student``
ARTIFACTS = {"teacher": teacher_artifact, "distill": distill_artifact, "refine": refine_artifact}


def artifact(cfg: DictConfig, stage: str) -> Artifact:
    """The artifact ``stage`` makes (or made) for ``cfg``."""
    if stage not in ARTIFACTS:
        raise ValueError(f"no stage {stage!r} makes an artifact; known: {sorted(ARTIFACTS)}")
    return ARTIFACTS[stage](cfg)


def job_key(cfg: DictConfig) -> str:
    """Identity of a whole run: its config as written (interpolations unresolved, so nothing is
    converted or loaded), without where outputs go, how they are logged or how memory is
    allocated. ``results.json`` records it; a multirun skips a job whose results carry the
    same key."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for key in ("hydra", "paths", "logger", "malloc_mmap_threshold"):
        plain.pop(key, None)
    return config_hash(plain)
