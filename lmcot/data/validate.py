"""Shared checks for data loaders: one error type, JSON reading, and the row loop.

Every loader turns raw rows into :class:`~lmcot.data.example.Example` through
:func:`convert_rows`, so ``limit`` and ``on_error`` mean the same everywhere, and every error
message names where it happened: the file (or hub split), the row index, the ``_id``, the field,
and what was expected.
"""

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lmcot.data.example import Example

logger = logging.getLogger("lmcot.data")

ON_ERROR = ("raise", "skip")


class DataError(ValueError):
    """A data file or row is malformed; the message says where and what was expected."""


def type_name(value: Any) -> str:
    """Name of a value's JSON-ish type, for "got ..." in error messages.

    >>> type_name(3), type_name(None), type_name([1]), type_name("")
    ('int', 'None', 'list', "''")
    """
    if value is None:
        return "None"
    if isinstance(value, str) and not value:
        return "''"  # an empty string is a value problem, not a type problem: show it
    return type(value).__name__


def where(source: str, index: int, row_id: Any = None) -> str:
    """Location prefix of a row error.

    >>> where("hotpot.json", 3, "5a8b")
    'hotpot.json row 3 (id 5a8b)'
    >>> where("hotpot.json", 3)
    'hotpot.json row 3'
    """
    return f"{source} row {index}" + (f" (id {row_id})" if isinstance(row_id, str) else "")


def field_error(at: str, field: str, expected: str, got: str) -> DataError:
    """The one format of a row error: location, field, expectation, what was found.

    >>> str(field_error("a.json row 0 (id x)", "answer", "a non-empty string", "int"))
    "a.json row 0 (id x): field 'answer' must be a non-empty string, got int"
    """
    return DataError(f"{at}: field '{field}' must be {expected}, got {got}")


def got(row: dict, key: str) -> str:
    """What a row holds at ``key``, for "got ..." in error messages.

    >>> got({"a": 1}, "a"), got({}, "a")
    ('int', 'nothing (key missing)')
    """
    return type_name(row[key]) if key in row else "nothing (key missing)"


def require_str(row: dict, key: str, at: str, *, empty_ok: bool = False) -> str:
    """``row[key]`` if it is a (non-empty, unless ``empty_ok``) string, else a DataError."""
    value = row.get(key)
    if not isinstance(value, str) or (value == "" and not empty_ok):
        raise field_error(at, key, "a string" if empty_ok else "a non-empty string", got(row, key))
    return value


def check_options(limit: int | None, on_error: str) -> None:
    """Reject config values no loader understands, before any data is read."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be null or an integer >= 0, got {limit!r}")


def read_json_list(path: str | Path) -> list:
    """Parse a JSON file whose top level must be a list (the original HotpotQA/2Wiki format).

    Raises:
        DataError: invalid or truncated JSON (with json's line, column and character
            position), bytes that are not UTF-8, or a top level that is not a list.
    """
    path = Path(path).expanduser()
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno} (char {err.pos}): "
            f"{err.msg}; is the file truncated or not JSON?"
        ) from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text at byte {err.start}: {err.reason}") from err
    if not isinstance(data, list):
        raise DataError(
            f"{path}: top level must be a JSON list of examples, got {type_name(data)}"
        )
    return data


def convert_rows(
    rows: Iterable[Any],
    parse: Callable[[Any, str, int], Example],
    *,
    source: str,
    limit: int | None = None,
    on_error: str = "raise",
) -> list[Example]:
    """Parse rows into examples, stopping after ``limit`` good ones; ids must be unique.

    Args:
        rows: raw rows, in file order.
        parse: ``parse(row, source, index) -> Example``; raises DataError for a bad row.
        source: file path or hub split, used in messages.
        limit: keep the first ``limit`` good examples (None: all). Rows after that are not read,
            so a bad row beyond the limit does not matter.
        on_error: ``raise`` stops at the first bad row; ``skip`` drops bad rows and logs one
            warning on the ``lmcot.data`` logger with the count and the first reason.

    Returns:
        The examples, in row order.
    """
    check_options(limit, on_error)
    examples: list[Example] = []
    first_row_of: dict[str, int] = {}
    n_read, skipped, first_reason = 0, 0, ""
    for index, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        n_read += 1
        try:
            example = parse(row, source, index)
            if example.id in first_row_of:
                # every artifact downstream is keyed by id, so a duplicate would silently merge
                raise field_error(
                    where(source, index, example.id),
                    "_id",
                    "unique in the file",
                    f"the id of row {first_row_of[example.id]} again",
                )
        except DataError as err:
            if on_error == "raise":
                raise
            skipped += 1
            first_reason = first_reason or str(err)
            continue
        first_row_of[example.id] = index
        examples.append(example)
    if skipped:
        logger.warning(
            "%s: skipped %d of %d rows read (on_error=skip); first reason: %s",
            source,
            skipped,
            n_read,
            first_reason,
        )
    return examples


def train_split(
    path: str | None,
    limit: int | None,
    split: str,
    train_path: str | None,
    train_limit: int | None,
) -> tuple[str | None, int | None]:
    """The (path, limit) to read for ``split``: training reads ``train_path`` and ``train_limit``.

    >>> train_split("dev.json", 10, "validation", "train.json", 500)
    ('dev.json', 10)
    >>> train_split("dev.json", 10, "train", "train.json", 500)
    ('train.json', 500)
    """
    if split != "train":
        return path, limit
    if path is not None and train_path is None:
        raise ValueError(
            f"data.path={path!r} is a local evaluation file, and training needs its own: set "
            "data.train_path to the original-format training file (or leave both null for the hub)"
        )
    return train_path, train_limit
