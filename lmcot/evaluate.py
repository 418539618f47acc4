"""Evaluation stage: every configured method answers the same examples; score and report.

Methods come from the ``methods`` config group, each a ``_target_`` node called as
``method(name, examples, reader)``. A method with a ``student_stage`` runs once per decoding
of the ``decoding`` group (``lm_guided_kd``, ``lm_guided_kd_sc``, ...) with the student that
stage exported. All LM calls go through caches, so re-running an evaluation costs no calls.
"""

import logging
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from lmcot import diagnostics, loggers, memory, results
from lmcot.artifacts import DONE, Artifact, artifact, is_rank_zero
from lmcot.cost import Meter, Metered, MethodCost
from lmcot.lm.base import LM
from lmcot.precision import model_dtype, training_precision
from lmcot.rewards.registry import zscores

log = logging.getLogger(__name__)


def student_dir(cfg: DictConfig, stage: str, path: str | None = None) -> Path:
    """The student ``stage`` exported for this config, or the one at ``path`` when given."""
    if path is None:
        if "stages" not in cfg:  # evaluate.py: no training stages to take a student from
            raise ValueError(
                f"{stage} made no student for this config (evaluate.py trains nothing): "
                "name the student directory with student_path=DIR"
            )
        art = artifact(cfg, stage)
        if not art.done:
            raise FileNotFoundError(
                f"no finished {stage} student for this config at {art.student}: run "
                f"`python train.py` with the same overrides and '{stage}' in stages, or name a "
                f"student directory with student_path=DIR{_siblings(art)}"
            )
        path = art.student
    elif not Path(path, "config.json").exists():
        raise FileNotFoundError(f"student_path={path} is not a transformers model directory")
    return Path(path)


def _siblings(art: Artifact) -> str:
    # finished students of the same stage under other keys: what the user may have meant
    done = sorted(p.parent for p in art.dir.parent.glob(f"*/student/{DONE}"))
    if not done:
        return ""
    listed = "\n  ".join(str(p) for p in done[-5:])
    return f"; finished {art.stage} students in this cache (see their manifest.json):\n  {listed}"


def build_methods(
    cfg: DictConfig, reader: LM, meter: Meter | None = None
) -> Iterator[tuple[str, Callable]]:
    """(name, method) in config order; LM-guided methods once per decoding, with their student
    (its generations tallied into ``meter``, when given).

    Every student is located first, so a missing one fails before any evaluation; each is
    loaded when its first method is due and dropped after its last, so one student at a time
    shares the memory with the reader. Its response cache names it by content fingerprint, so
    a re-exported student never inherits another's rationales.
    """
    dirs = {name: student_dir(cfg, node.student_stage, node.get("student_path"))
            for name, node in cfg.methods.items() if "student_stage" in node}  # fmt: skip
    for name, node in cfg.methods.items():
        if name not in dirs:
            yield name, instantiate(node)
            continue
        student = instantiate(
            cfg.student, name_or_path=str(dirs[name]), tokenizer=None, model_config=None,
            lora=None, cache=f"{cfg.paths.cache_dir}/student.sqlite",
        )  # fmt: skip
        if meter is not None:
            student = Metered(student, meter, "student")
        for decoding_node in cfg.decoding.values():
            extra = {}
            if getattr(get_class(decoding_node._target_), "needs_registry", False):
                extra["registry"] = instantiate(cfg.selection, lm=reader)
            decoding = instantiate(decoding_node, **extra)
            yield name + decoding.suffix, instantiate(node, student=student, decoding=decoding)
        del student  # before the next student loads
        memory.release()


def run_precision(cfg: DictConfig, reader: LM) -> dict[str, str]:
    """What each model ran in: the reader's and the students' dtypes at evaluation and the
    precision the training stages trained in (as the artifacts' keys hold it)."""
    out = {"reader": getattr(reader, "dtype", "remote")}
    if any("student_stage" in node for node in cfg.methods.values()):
        out["student"] = model_dtype(cfg.student.get("dtype", "float32"),
                                     cfg.student.get("device"))  # fmt: skip
    if "stages" in cfg and "trainer" in cfg:
        out["training"] = training_precision(cfg.trainer)
    return out


def eval_split(data: DictConfig) -> str | None:
    """Where the evaluated questions came from: ``data.path`` as given when the data is a local
    file, else the split the loader drew (``validation``, ``dev``, ``test``, ...); None for a
    loader with neither."""
    if data.get("path"):
        return str(data.path)
    split = data.get("split")
    return None if split is None else str(split)


def rationale_quality(cfg: DictConfig, reader: LM, examples: list, predictions: list) -> tuple:
    """Mean of every ``quality`` aspect per method that wrote rationales, and per-row scores.

    Every method is scored against the same reference: with ``quality.normalize`` (or
    ``normalize_then_sum``) each aspect is z-scored against the pooled scores of all methods'
    rationales (all of them, whatever ``normalize_window``), not against a running history that
    would depend on which method came first. Pooled rather than KD's alone, so a run without a
    KD method has a reference too; adding or removing a method moves it for all methods alike.
    """
    registry = instantiate(cfg.quality, lm=reader)
    by_id = {ex.id: ex for ex in examples}
    raw, preds = {}, {}
    for method in dict.fromkeys(p.method for p in predictions if p.rationale is not None):
        preds[method] = [p for p in predictions if p.method == method]
        raw[method] = registry.score([""] * len(preds[method]),
                                     [p.rationale for p in preds[method]],
                                     examples=[by_id[p.id] for p in preds[method]])  # fmt: skip
    pooled = {a: [s for scores in raw.values() for s in scores[a]] for a in registry.scorers}
    means, rows = {}, []
    for method, aspects in raw.items():
        normalized = ({a: zscores(s, pooled[a]) for a, s in aspects.items()}
                      if registry.normalizes else aspects)  # fmt: skip
        scores = registry.combine(aspects, normalized)
        means[method] = scores.means()
        rows += [{"id": p.id, "method": method, **r} for p, r in zip(preds[method], scores.rows())]
    return means, rows


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the methods of ``cfg.methods`` on ``cfg.data``; write and log the results.

    Under DDP/FSDP only rank zero evaluates: the other ranks would repeat every LM call and
    write the same files; they return no metrics.
    """
    if not is_rank_zero():
        log.info("evaluate: rank %d leaves evaluation to rank zero", rank_zero_only.rank)
        return {}
    examples = instantiate(cfg.data)
    if not examples:
        raise ValueError(f"data config {cfg.data._target_} produced no examples")
    reader: LM = instantiate(cfg.reader)
    meter = Meter()
    metered = Metered(reader, meter, "reader")  # what each method asks of the reader
    predictions, samples_used, second_turn, cost = [], {}, {}, {}
    for name, method in build_methods(cfg, metered, meter):
        log.info("method %s on %d examples", name, len(examples))
        with MethodCost(meter, reader) as spent:
            predictions += method(name, examples, metered)
        cost[name] = spent.cost
        if used := getattr(getattr(method, "decoding", None), "samples_used", None):
            samples_used[name] = statistics.fmean(used)  # sampled rationales per question
        if hasattr(method, "second_turns"):  # CoT replies that stated no answer, asked again
            second_turn[name] = method.second_turns
        del method  # holds its student: let it go before the next one loads
    summary = {
        "n": len(examples),
        "data": cfg.data._target_.rsplit(".", 2)[-2],
        "split": eval_split(cfg.data),
        "seed": cfg.seed,
        "reader": reader.cache_id,
        "prompt_version": cfg.prompts.version,
        "reader_calls": reader.backend_calls,
        "saved_calls": reader.saved_calls,  # duplicate prompts answered once, not asked again
        "samples_used": samples_used,
        "second_turn": second_turn,
        "cost": cost,  # per method: tokens asked (cached or not), calls made, seconds
        "precision": run_precision(cfg, reader),
        "methods": results.summarize(predictions, seed=cfg.seed),
        "notes": OmegaConf.to_container(cfg.notes),
        "diagnostics": diagnostics.diagnose(predictions),
    }
    quality_rows = []
    if cfg.evaluate.rationale_quality:
        summary["quality"], quality_rows = rationale_quality(cfg, reader, examples, predictions)
        summary["quality_intervals"] = results.quality_intervals(quality_rows, seed=cfg.seed)
    path = results.write(cfg.paths.output_dir, summary, predictions, quality_rows)
    log.info("wrote %s", path)
    results.print_table(summary)
    diagnostics.print_table(summary["diagnostics"])
    if quality_rows:
        results.print_quality_table(summary["quality_intervals"])
    metrics = results.logged_metrics(summary)
    run_loggers = loggers.instantiate_loggers(cfg.get("logger"), stage="evaluate")
    loggers.log_safely(run_loggers, "log_hyperparams", loggers.hparams(cfg))
    loggers.log_safely(run_loggers, "log_metrics", metrics)
    loggers.log_safely(
        run_loggers,
        "log_table",
        key="predictions",
        columns=["id", "method", "rationale", "prediction", "gold", "em", "f1"],
        data=[
            [p.id, p.method, p.rationale, p.prediction, p.gold, p.em, p.f1] for p in predictions
        ],
    )
    if quality_rows:
        columns = list(quality_rows[0])
        loggers.log_safely(run_loggers, "log_table", key="rationale_quality", columns=columns,
                           data=[[r[c] for c in columns] for r in quality_rows])  # fmt: skip
    loggers.finish(run_loggers)
    return metrics
