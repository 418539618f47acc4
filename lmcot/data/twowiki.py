"""2WikiMultiHopQA from an original JSON file (with its answer aliases) or from the hub.

Original format (Ho et al., COLING 2020; github.com/Alab-NII/2wikimultihop): HotpotQA's row format
(``_id``, ``question``, ``answer``, ``type``, ``context``, ``supporting_facts``) plus ``evidences``
and, in the later release, ``entity_ids``, ``evidences_id`` and ``answer_id``. Rows are checked by
:func:`lmcot.data.hotpotqa.parse_row`; this module adds the aliases. Types are ``comparison``,
``inference``, ``compositional`` and ``bridge_comparison``.

Aliases: the release's ``id_aliases.json`` is JSON lines, one
``{"Q_id": ..., "aliases": [...], "demonyms": [...]}`` per Wikidata entity. As in the official
evaluation script, an example's gold answers are its ``answer`` plus the aliases and demonyms of
its ``answer_id``.

Hub copy: ``ohjoonhee/2WikiMultihopQA`` (Parquet, all 167,454 / 12,576 / 12,576 train /
validation / test rows of the original, loads with current ``datasets`` since it needs no loading
script). Its schema, checked on its dataset card: ``_id``, ``type``, ``question``, ``answer``,
``context={"title": [...], "content": [[...], ...]}``, ``supporting_facts={"title": [...],
"sent_id": [...]}``, ``evidences={"fact", "relation", "entity"}``. It has no ``answer_id``, so hub
examples come without aliases; evaluate on the original files to match the paper's metric.
"""

import json
from pathlib import Path
from typing import Any

from lmcot.data.example import Example
from lmcot.data.hotpotqa import hub_rows, parse_hub_row, parse_row
from lmcot.data.validate import (
    DataError,
    check_options,
    convert_rows,
    field_error,
    read_json_list,
    train_split,
    type_name,
    where,
)

HUB_ID = "ohjoonhee/2WikiMultihopQA"
ALIASES_FILE = "id_aliases.json"


def load(
    path: str | None = None,
    split: str = "validation",
    limit: int | None = None,
    on_error: str = "raise",
    aliases_path: str | None = None,
    train_path: str | None = None,
    train_limit: int | None = None,
) -> list[Example]:
    """Load 2WikiMultiHopQA examples.

    Args:
        path: an original-format JSON file (e.g. ``dev.json``); None loads the hub copy.
        split: hub split (``train``, ``validation``, ``test``); with files, ``train`` reads
            ``train_path``.
        limit: keep the first ``limit`` examples (None: all).
        on_error: ``raise`` on the first malformed row, or ``skip`` it and log a warning.
        aliases_path: the release's ``id_aliases.json``; None uses the one next to ``path`` if
            there is one.
        train_path: the release's ``train.json``.
        train_limit: ``limit`` of the training split.

    Returns:
        Examples in file order, with ``aliases`` from ``answer_id`` where known.

    Raises:
        DataError: a malformed data or aliases file, or with ``on_error="raise"`` a bad row.
        ValueError: ``aliases_path`` without ``path`` (the hub copy has no ``answer_id``).
    """
    path, limit = train_split(path, limit, split, train_path, train_limit)
    check_options(limit, on_error)
    if path is None:
        if aliases_path is not None:
            raise ValueError(
                f"aliases_path={aliases_path!r} needs a local data file: the hub copy {HUB_ID} "
                "has no answer_id to join aliases on; set path to the release's dev.json"
            )
        source = f"hub {HUB_ID} split {split}"
        rows = hub_rows(HUB_ID, None, split)
        return convert_rows(rows, parse_hub_row, source=source, limit=limit, on_error=on_error)

    if aliases_path is None and (Path(path).expanduser().parent / ALIASES_FILE).is_file():
        aliases_path = str(Path(path).expanduser().parent / ALIASES_FILE)
    aliases = read_aliases(aliases_path) if aliases_path is not None else {}

    def parse(row: Any, source: str, index: int) -> Example:
        return parse_row_with_aliases(row, source, index, aliases)

    rows = read_json_list(path)
    return convert_rows(rows, parse, source=str(path), limit=limit, on_error=on_error)


def parse_row_with_aliases(
    row: Any, source: str, index: int, aliases: dict[str, list[str]]
) -> Example:
    """:func:`lmcot.data.hotpotqa.parse_row`, plus the aliases of the row's ``answer_id``.

    ``answer_id`` may be missing (first release) or null (answers such as dates have no entity);
    then the example has no aliases. Aliases equal to the answer are dropped.
    """
    example = parse_row(row, source, index)
    answer_id = row.get("answer_id")
    if answer_id is not None and not isinstance(answer_id, str):
        at = where(source, index, example.id)
        raise field_error(at, "answer_id", "a Wikidata id string or null", type_name(answer_id))
    example.aliases = [a for a in aliases.get(answer_id, []) if a != example.answer]
    return example


def read_aliases(path: str | Path) -> dict[str, list[str]]:
    """Read ``id_aliases.json`` (JSON lines) into ``{Q_id: aliases + demonyms}``, deduplicated.

    Raises:
        DataError: naming the file, the 1-based line and the field, for a line that is not
            UTF-8, or not a JSON object with a string ``Q_id`` and lists of strings ``aliases``
            and ``demonyms``.
    """
    path = Path(path).expanduser()
    table: dict[str, list[str]] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            at = f"{path} line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{at}: not UTF-8 text at byte {err.start}: {err.reason}") from err
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{at}: invalid JSON at column {err.colno}: {err.msg} "
                    "(id_aliases.json has one JSON object per line)"
                ) from err
            if not isinstance(entry, dict):
                raise DataError(f"{at}: must be a JSON object, got {type_name(entry)}")
            q_id = entry.get("Q_id")
            if not isinstance(q_id, str):
                raise field_error(at, "Q_id", "a string", type_name(q_id))
            names = []
            for key in ("aliases", "demonyms"):
                values = entry.get(key, [])
                if not isinstance(values, list):
                    raise field_error(at, key, "a list of strings", type_name(values))
                for v in values:
                    if not isinstance(v, str):
                        raise field_error(at, key, "a list of strings", f"a {type_name(v)} in it")
                names += values
            table[q_id] = list(dict.fromkeys(names))  # dedupe, keep file order: deterministic
    return table
