"""Evaluate the configured methods (default: the paper's two baselines) on one dataset.

python evaluate.py
python evaluate.py data=hotpotqa data.path=hotpot_dev_distractor_v1.json data.limit=100
"""

import hydra
from omegaconf import DictConfig

from lmcot import preflight
from lmcot.evaluate import evaluate
from lmcot.tasks import task_wrapper


def checked_evaluate(cfg: DictConfig) -> dict[str, float]:
    """:func:`lmcot.evaluate.evaluate` after the start-up checks (:mod:`lmcot.preflight`)."""
    preflight.check(cfg)
    return evaluate(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    metrics = task_wrapper(checked_evaluate)(cfg) or {}  # a failed multirun job returns None
    return metrics.get(cfg.optimized_metric)  # what a Hydra sweeper optimises


if __name__ == "__main__":
    main()
