"""The test session writes converted models inside the clone, never under the user's home."""

import subprocess
from pathlib import Path

from conftest import REPO, TEST_MODEL_DIR
from omegaconf import OmegaConf


def test_model_dir_of_the_tests_is_inside_the_clone_and_git_ignored(cfg_factory):
    model_dir = Path(cfg_factory("debug=smoke").paths.model_dir).resolve()
    assert model_dir == TEST_MODEL_DIR
    assert not model_dir.is_relative_to(Path.home() / ".cache")
    if not REPO.is_relative_to(Path.home()):  # a clone under $HOME may keep it there
        assert not model_dir.is_relative_to(Path.home())
    assert model_dir.is_relative_to(REPO)
    # configs read without Hydra (tests/test_hf_backend.py) resolve to the same folder
    assert OmegaConf.load(REPO / "conf/paths/default.yaml").model_dir == str(model_dir)
    if (REPO / ".git").exists():  # a clone (not an unpacked archive): keep it out of commits
        ignored = subprocess.run(["git", "check-ignore", "-q", str(model_dir / "x")], cwd=REPO)
        assert ignored.returncode == 0, f"{model_dir} is not git-ignored"
