"""Checkpoints and exports of trained students, shared by the distill and refine stages.

A checkpoint holds the trained parameters only (LoRA: the adapters), loaded key by key; an
export is a plain transformers directory (LoRA merged) with a marker written last, so a crash
never leaves a half-written student that a later stage would take for a finished one.
"""

import json
import logging
import os
import shutil

import torch

from lmcot.artifacts import DONE, Artifact
from lmcot.lm.fingerprint import path_fingerprint
from lmcot.lm.hf import HFModel

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
                stage: str, made: str) -> dict[str, float]:  # fmt: skip
    """Reload the best checkpoint (not the last step's weights), prefix the metrics with the
    stage and export from rank zero only (one writer under DDP/FSDP), logging "<made> student
    exported" (the line tests and users grep for)."""
    if best:
        load_trained(module, best)
    metrics = {f"{stage}/{k.replace('/', '_')}": v for k, v in metrics.items()}
    if trainer.is_global_zero:
        export(student, art, metrics)
        log.info("%s student exported to %s", made, art.student)
    return metrics


def export(student: HFModel, art: Artifact, metrics: dict) -> None:
    """Save the student as a plain transformers directory (LoRA merged), then mark it done.

    Written beside the target and renamed into place, so a kill never leaves a half-written
    student; the marker inside is written last of all.
    """
    model = student.model.merge_and_unload() if student.lora else student.model
    partial = art.dir / f"student.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    student.tokenizer.save_pretrained(partial)
    shutil.rmtree(art.student, ignore_errors=True)  # an interrupted earlier export
    partial.rename(art.student)
    art.write_manifest(metrics=metrics, student_fingerprint=path_fingerprint(art.student))
    (art.student / DONE).write_text(json.dumps(metrics, indent=2))
