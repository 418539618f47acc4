"""The README and docs/*.md say only what the code and the configs do.

Every command in a fenced code block (```) of README.md and docs/*.md is read like this:

- A line ending in ``\\`` continues on the next; a ``#`` that opens a word starts a comment; a
  line splits into commands at ``&&``, ``||``, ``;``, ``|`` and ``&``; leading ``VAR=value``
  assignments are skipped; ``python`` and ``python3`` are the same.
- ``python train.py ARGS``, ``python evaluate.py ARGS``, ``python benchmarks/default_run.py
  ARGS`` (which hands its ARGS to train.py) and ``python -m lmcot.X ARGS`` where lmcot.X is a
  Hydra app (its ``@hydra.main`` names its config): ARGS compose with Hydra's compose API the
  way the CLI would (``conftest.compose_cfg``: output and cache under ``tmp_path``), with the
  ``sweeps`` group, ``# @package _global_`` experiments and ``hydra/launcher=...``; nothing
  runs. A typo'd group, option or key fails here.
- ``-m`` / ``--multirun``: as Hydra does, the command line without its sweeps composes first,
  then the jobs the basic sweeper would launch from the config's ``hydra.sweeper.params`` and
  the command line's sweeps: every value of a sweep over configs (``experiment=a,b``), the
  first value of a sweep over values (``seed=0,1,2``), which cannot add or remove a key.
  ``--cfg``/``-c`` and ``--package``/``-p`` take a value and are ignored, as are ``--help``,
  ``--hydra-help``, ``--info`` and ``--resolve``; any other flag fails.
- Placeholders: a ``<...>`` value, ``...`` or ``…`` leaves its override out of the composition,
  but its group must exist or its key be in the composed config; a word that opens with ``[``
  is a usage bracket (``[--out DIR]``, ``[a | b]``), an optional part dropped up to its ``]``;
  ALL-CAPS values (``data.path=FILE``) compose as the strings they are.
- ``python -m lmcot.X``: the module exists (``importlib.util.find_spec``); argparse entries
  (report, compare) are not run.
- ``python some/file.py`` and ``bash some/file.sh``: the file exists.

And the README's configuration table (the first table under ``## Configuration``): every group
in its first column is a folder of conf/ (``hydra/launcher`` included), and every option
written as a bare backticked word in its second column is a config of that group (a file, or
one that a Hydra plugin adds: ``basic``, ``submitit_local``).
"""

import importlib.util
import itertools
import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO, compose_cfg
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

CONF = REPO / "conf"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# scripts whose arguments are Hydra overrides of a config: path -> config name
HYDRA_SCRIPTS = {"train.py": "train", "evaluate.py": "eval", "benchmarks/default_run.py": "train"}
PLACEHOLDER = "__placeholder__"
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
FLAGS_IGNORED = {"--help", "-h", "--hydra-help", "--info", "--resolve"}
_COMPOSED: dict = {}  # (config, overrides) -> cfg: the docs repeat commands (`python train.py`)


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every fenced code block, continuations joined."""
    out, fence, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence, pending = not fence, ""
            continue
        if not fence:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def split_commands(line: str) -> list[list[str]]:
    """The words of each command of one shell line, comments and usage brackets dropped."""
    line = re.sub(r"<[^<>\n]*>", PLACEHOLDER, line)  # <a KD student> -> one placeholder word
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote in prose-like code: not a command
        return []
    commands, current, bracket = [], [], 0
    for word in words:
        if bracket or word.startswith("["):  # usage bracket: [--out DIR], [a | b]
            bracket += word.count("[") - word.count("]")
            continue
        if word in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def classify(words: list[str]) -> tuple[str, str, list[str]] | None:
    """("hydra", config name, args) | ("module", name, args) | ("file", path, []) | None."""
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value before the command
    if len(words) < 2:
        return None
    program, first, rest = words[0], words[1], words[2:]
    if program in ("python", "python3"):
        if first == "-m" and rest and rest[0].split(".")[0] == "lmcot":
            name = rest[0]
            return ("module", name, rest[1:])
        if first.endswith(".py"):
            if first in HYDRA_SCRIPTS:
                return ("hydra", HYDRA_SCRIPTS[first], rest)
            return ("file", first, [])
    if program == "bash" and first.endswith(".sh"):
        return ("file", first, [])
    return None


def hydra_config_of(module: str) -> str | None:
    """The config name a module's ``@hydra.main`` composes, or None for a plain script."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    found = re.search(r"@hydra\.main\([^)]*config_name=\"(\w+)\"", source)
    return found.group(1) if found else None


def collect() -> list:
    """One pytest param per command of the docs, named by file, line and command."""
    params = []
    for path in DOCS:
        for number, line in fenced_lines(path.read_text()):
            for words in split_commands(line):
                if command := classify(words):
                    where = f"{path.relative_to(REPO)}:{number}"
                    params.append(pytest.param(*command, id=f"{where} {' '.join(words)[:60]}"))
    return params


COMMANDS = collect()


def overrides_and_flags(args: list[str]) -> tuple[list[str], list[str], bool]:
    """(overrides to compose, overrides left out as placeholders, multirun)."""
    overrides, left_out, multirun, skip = [], [], False, False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif arg.startswith("-"):
            assert arg in FLAGS_IGNORED, f"unknown flag {arg}"
        elif PLACEHOLDER in arg or re.search(r"=(\.\.\.|…)$", arg):
            left_out.append(arg)
        else:
            overrides.append(arg)
    return overrides, left_out, multirun


def composed(tmp_path: Path, config_name: str, job: tuple[str, ...]):
    """The composed config of one job, composed once per session."""
    if (config_name, job) not in _COMPOSED:
        _COMPOSED[config_name, job] = compose_cfg(tmp_path, *job, config_name=config_name)
    return _COMPOSED[config_name, job]


def is_group(key: str) -> bool:
    """Whether an override's key selects a config (``student``, ``hydra/launcher``)."""
    key = key.lstrip("+~")
    return "/" in key or "@" in key or (CONF / key.split("@", 1)[0]).is_dir()


def jobs(tmp_path: Path, config_name: str, overrides: list[str]) -> list[tuple[str, ...]]:
    """The jobs of a multirun, as Hydra would launch them, over the sweeps that change structure.

    Hydra first composes the command line without its sweeps (a key that no config of that
    stage has fails there, before any job); then the basic sweeper crosses the config's
    ``hydra.sweeper.params`` with the command line's sweeps, the command line winning. A sweep
    over values (``seed=0,1,2``, ``reward.aspects=...``) cannot add or remove a key, so it is
    composed at its first value; a sweep over configs (``experiment=a,b``) at every value.
    """
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    parent = composed(tmp_path, config_name, tuple(fixed))
    sweeper = parent.hydra.sweeper
    if not sweeper._target_.endswith("BasicSweeper"):
        return [tuple(fixed)]  # another sweeper's space (Optuna's intervals): the parent alone
    params = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    narrowed = []
    for o in parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *overrides]):
        if o.is_sweep_override() and not is_group(o.key_or_group):
            o = parser.parse_override(f"{o.get_key_element()}={next(o.sweep_string_iterator())}")
        narrowed.append(o)
    return [tuple(job) for job in itertools.chain(*BasicSweeper.split_arguments(narrowed, None))]


def assert_left_out_exists(cfg, override: str) -> None:
    """A placeholder override still names a group of conf/ or a key of the composed config."""
    key = override.split("=", 1)[0].lstrip("+~")
    if is_group(key):
        group = key.split("@", 1)[0]
        assert (CONF / group).is_dir() or group.startswith("hydra/"), f"no group {group}"
        return
    node, *parts = key.split(".")
    assert node in cfg, f"no key {key}"
    value = cfg[node]
    for part in parts:
        assert part in value, f"no key {key}"
        value = value[part]


@pytest.mark.parametrize("kind,name,args", COMMANDS)
def test_every_documented_command_composes(tmp_path, kind, name, args):
    if kind == "file":
        assert (REPO / name).is_file(), f"{name} does not exist"
        return
    if kind == "module":
        assert importlib.util.find_spec(name), f"no module {name}"
        config_name = hydra_config_of(name)
        if config_name is None:
            return  # an argparse entry (report, compare): its existence is what is checked
    else:
        config_name = name
    overrides, left_out, multirun = overrides_and_flags(args)
    if multirun:
        configs = [
            composed(tmp_path, config_name, job) for job in jobs(tmp_path, config_name, overrides)
        ]
    else:
        configs = [composed(tmp_path, config_name, tuple(overrides))]
    for cfg in configs:
        for override in left_out:
            assert_left_out_exists(cfg, override)


def test_the_docs_have_commands_to_check():
    described = {p.values[1] for p in COMMANDS}
    assert {"train", "eval", "lmcot.report", "lmcot.compare"} <= described


# ---- the README's configuration table --------------------------------------------------------


def configuration_table() -> list[tuple[str, list[str]]]:
    """(group, options) of each row of the first table under ``## Configuration``."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else []
        if len(cells) < 2 or not cells[0].startswith("`"):
            if rows and not line.strip().startswith("|"):
                break  # the first table ended
            continue
        # the options column only: bare backticked words (keys hold a dot or an `=`)
        rows.append((cells[0].strip("`"), re.findall(r"`([A-Za-z0-9_]+)`", cells[1])))
    return rows


def test_the_configuration_table_names_only_groups_and_options_that_exist(tmp_path):
    rows = configuration_table()
    assert len(rows) >= 10, "the README's configuration table was not found"
    for group, options in rows:
        assert (CONF / group).is_dir() or group == "hydra/launcher", f"no config group {group}"
        assert options, f"the {group} row names no option"
        for option in options:
            if (CONF / group / f"{option}.yaml").is_file():
                continue
            # a config a Hydra plugin provides (hydra/launcher=basic, submitit_local)
            try:
                compose_cfg(tmp_path, f"{group}={option}", config_name="train")
            except Exception as e:  # noqa: BLE001  (the message says which option is wrong)
                pytest.fail(f"README configuration table: {group}={option} does not exist ({e})")
