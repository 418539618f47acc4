"""Checkpoints and exports of trained students, shared by the distill and refine stages.

A checkpoint holds the trained parameters only (LoRA: the adapters), loaded key by key; an
export is a transformers directory with a marker written last, so a crash never leaves a
half-written student that a later stage would take for a finished one.

Distillation merges its LoRA into the base: its update is large, and refinement starts from
exactly the merged student that KD's evaluation measures. Refinement keeps its adapters beside
the base (``student/adapter``, loaded by :class:`lmcot.lm.hf.HFModel`): its update (~1e-4 on
weights of ~0.04) is below bf16's resolution, so merging into bf16 weights rounded most of it
away (9% of the adapted weights changed), while the unmerged adapters compute what the trained
policy computed.
"""

import json
import logging
import os
import shutil

import torch

from lmcot.artifacts import DONE, Artifact
from lmcot.lm.fingerprint import path_fingerprint
from lmcot.lm.hf import ADAPTER_DIR, HFModel

log = logging.getLogger(__name__)


def check_trained_keys(module: torch.nn.Module, state: dict, source: str) -> None:
    """Fail unless ``state`` holds every trained parameter of ``module`` and nothing unknown.

    Checkpoints hold the trained parameters only (LoRA: the adapters), so they are loaded with
    ``strict=False``; without this check a renamed or missing key would leave the weights as
    they were and export the last step as if it were the best.
    """
    names = set(module.state_dict())
    lacking = sorted(n for n, p in module.named_parameters() if p.requires_grad and n not in state)
    unknown = sorted(set(state) - names)
    if lacking or unknown:
        raise RuntimeError(
            f"{source} does not fit the model: {len(lacking)} trained parameters missing "
            f"(e.g. {lacking[:3]}), {len(unknown)} unknown keys (e.g. {unknown[:3]})"
        )


def load_trained(module: torch.nn.Module, path: str) -> None:
    """Load a checkpoint's trained parameters into ``module``, checked key by key."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    check_trained_keys(module, state, path)
    module.load_state_dict(state, strict=False)


def export_best(trainer, module, best: str, student: HFModel, art: Artifact, metrics: dict,
                stage: str, made: str, merge: bool = True) -> dict[str, float]:  # fmt: skip
    """Reload the chosen checkpoint ``best`` (distillation: the best on val/loss; refinement:
    the best on ``refine.export_on``, or the last step's), prefix the metrics with the stage and
    export from rank zero only (one writer under DDP/FSDP), logging "<made> student exported"
    (the line tests and users grep for)."""
    if best:
        load_trained(module, best)
    metrics = {f"{stage}/{k.replace('/', '_')}": v for k, v in metrics.items()}
    if trainer.is_global_zero:
        export(student, art, metrics, merge)
        log.info("%s student exported to %s", made, art.student)
    return metrics


def export(student: HFModel, art: Artifact, metrics: dict, merge: bool = True) -> None:
    """Save the student as a transformers directory, then mark it done: LoRA merged into the
    base, or (``merge=False``) the base as held and the adapters in ``adapter/`` beside it.

    Written beside the target and renamed into place, so a kill never leaves a half-written
    student; the marker inside is written last of all.
    """
    partial = art.dir / f"student.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    if not student.lora:
        student.model.save_pretrained(partial)
    elif merge:
        student.model.merge_and_unload().save_pretrained(partial)
    else:
        base = student.model.get_base_model()  # its LoRA layers wrap the base weights
        weights = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items()
                   if ".lora_" not in k}  # fmt: skip
        base.save_pretrained(partial, state_dict=weights)
        student.model.save_pretrained(partial / ADAPTER_DIR)
    student.tokenizer.save_pretrained(partial)
    shutil.rmtree(art.student, ignore_errors=True)  # an interrupted earlier export
    partial.rename(art.student)
    art.write_manifest(metrics=metrics, student_fingerprint=path_fingerprint(art.student))
    (art.student / DONE).write_text(json.dumps(metrics, indent=2))
