"""HotpotQA (distractor setting) from an original JSON file or from the hub.

Original format (``hotpot_dev_distractor_v1.json``): a JSON list of objects with ``_id``,
``question``, ``answer``, ``type``, ``level``, ``context`` as ``[[title, [sentence, ...]], ...]``
and ``supporting_facts`` as ``[[title, sent_id], ...]``. 2WikiMultiHopQA uses the same format plus
extra keys, so :mod:`lmcot.data.twowiki` reuses :func:`parse_row` and :func:`from_hub`.

Hub copy: ``hotpotqa/hotpot_qa``, config ``distractor`` (splits ``train``, ``validation``), the
official dataset's own hub repository. Its rows hold ``id`` and columns of lists:
``context={"title": [...], "sentences": [[...], ...]}`` and ``supporting_facts={"title": [...],
"sent_id": [...]}``; :func:`from_hub` turns them back into the original shape, so both sources go
through the same checks.
"""

from collections.abc import Iterable
from typing import Any

from lmcot.data.example import Example
from lmcot.data.validate import (
    DataError,
    check_options,
    convert_rows,
    field_error,
    got,
    read_json_list,
    require_str,
    train_split,
    type_name,
    where,
)

HUB_ID = "hotpotqa/hotpot_qa"
HUB_CONFIG = "distractor"


def load(
    path: str | None = None,
    split: str = "validation",
    limit: int | None = None,
    on_error: str = "raise",
    train_path: str | None = None,
    train_limit: int | None = None,
) -> list[Example]:
    """Load HotpotQA examples.

    Args:
        path: an original-format JSON file; None loads ``hotpotqa/hotpot_qa`` (distractor).
        split: hub split (``train``, ``validation``); with files, ``train`` reads ``train_path``.
        limit: keep the first ``limit`` examples (None: all).
        on_error: ``raise`` on the first malformed row, or ``skip`` it and log a warning.
        train_path: the original-format training file (e.g. ``hotpot_train_v1.1.json``).
        train_limit: ``limit`` of the training split.

    Returns:
        Examples in file order; sentences keep their original text (leading spaces included).

    Raises:
        DataError: a malformed file, or with ``on_error="raise"`` a malformed row.
    """
    path, limit = train_split(path, limit, split, train_path, train_limit)
    check_options(limit, on_error)
    if path is not None:
        rows = read_json_list(path)
        return convert_rows(rows, parse_row, source=str(path), limit=limit, on_error=on_error)
    return convert_rows(
        hub_rows(HUB_ID, HUB_CONFIG, split),
        parse_hub_row,
        source=f"hub {HUB_ID} ({HUB_CONFIG}) split {split}",
        limit=limit,
        on_error=on_error,
    )


def hub_rows(name: str, config: str | None, split: str) -> Iterable[dict]:
    """Rows of a hub dataset split (downloads on first use; needs network or the HF cache)."""
    import datasets  # slow import, and only the hub path needs it

    return datasets.load_dataset(name, config, split=split)


def parse_row(row: Any, source: str, index: int) -> Example:
    """Check one original-format row and turn it into an Example.

    Args:
        row: the decoded JSON object.
        source: the file name (or hub split) for error messages.
        index: the row's 0-based position in the file.

    Raises:
        DataError: naming source, row index, id and field, e.g. a missing or empty ``answer``,
            a context entry that is not a ``[title, [sentences]]`` pair, or a supporting fact
            whose title is not in the context or whose sentence index is out of range.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where(source, index)}: must be a JSON object, got {type_name(row)}")
    at = where(source, index, row.get("_id"))
    row_id = require_str(row, "_id", at)
    question = require_str(row, "question", at)
    answer = require_str(row, "answer", at)
    qtype = require_str(row, "type", at, empty_ok=True)
    context = _context(row, at)
    return Example(
        id=row_id,
        question=question,
        context=context,
        answer=answer,
        supporting_facts=_supporting_facts(row, context, at),
        type=qtype,
    )


def _context(row: dict, at: str) -> list[tuple[str, list[str]]]:
    paragraphs = row.get("context")
    if not isinstance(paragraphs, list) or not paragraphs:
        expected = "a non-empty list of [title, [sentence, ...]] pairs"
        raise field_error(
            at, "context", expected, "[]" if paragraphs == [] else got(row, "context")
        )
    context = []
    for i, pair in enumerate(paragraphs):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            got_pair = (
                f"a list of length {len(pair)}" if isinstance(pair, list) else type_name(pair)
            )
            raise field_error(at, f"context[{i}]", "a [title, [sentence, ...]] pair", got_pair)
        title, sentences = pair
        if not isinstance(title, str):
            raise field_error(at, f"context[{i}][0]", "a string (the title)", type_name(title))
        if not isinstance(sentences, list | tuple):
            expected = "a list of sentences"
            raise field_error(at, f"context[{i}][1]", expected, type_name(sentences))
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                expected = "a string (a sentence)"
                raise field_error(at, f"context[{i}][1][{j}]", expected, type_name(sentence))
        context.append((title, list(sentences)))
    return context


def _supporting_facts(
    row: dict, context: list[tuple[str, list[str]]], at: str
) -> list[tuple[str, int]]:
    facts = row.get("supporting_facts")
    if not isinstance(facts, list):
        expected = "a list of [title, sent_id] pairs"
        raise field_error(at, "supporting_facts", expected, got(row, "supporting_facts"))
    # resolved like Example.supporting_sentences does (a repeated title: the last one wins), so
    # a fact that passes here can always be read back
    n_sentences = {title: len(sentences) for title, sentences in context}
    checked = []
    for k, fact in enumerate(facts):
        name = f"supporting_facts[{k}]"
        if not isinstance(fact, list | tuple) or len(fact) != 2:
            raise field_error(at, name, "a [title, sent_id] pair", type_name(fact))
        title, sent_id = fact
        if not isinstance(title, str) or title not in n_sentences:
            got_title = repr(title) if isinstance(title, str) else type_name(title)
            raise field_error(at, name, "a title of a 'context' paragraph", got_title)
        # bool is an int in Python, but True is no sentence index
        if not isinstance(sent_id, int) or isinstance(sent_id, bool):
            raise field_error(at, name, "a [title, int] pair", f"sent_id {type_name(sent_id)}")
        n = n_sentences[title]
        if not 0 <= sent_id < n:
            expected = f"a sentence index in [0, {n}) of paragraph {title!r}"
            raise field_error(at, name, expected, str(sent_id))
        checked.append((title, sent_id))
    return checked


def from_hub(row: dict, source: str, index: int) -> dict:
    """A hub row (columns of lists) in the original file's shape (lists of pairs).

    Besides HotpotQA's names, it accepts ``_id`` for ``id`` and ``content`` for ``sentences``,
    the names of the 2WikiMultiHopQA hub copy. Other keys are kept as they are.

    >>> hub = {"id": "1", "question": "q?", "answer": "a", "type": "bridge",
    ...        "context": {"title": ["A"], "sentences": [["a0.", " a1."]]},
    ...        "supporting_facts": {"title": ["A"], "sent_id": [1]}}
    >>> original = from_hub(hub, "hub", 0)
    >>> original["_id"], original["context"], original["supporting_facts"]
    ('1', [['A', ['a0.', ' a1.']]], [['A', 1]])
    """
    original = {k: v for k, v in row.items() if k != "id"}
    original["_id"] = row.get("_id", row.get("id"))
    at = where(source, index, original["_id"])
    context = row.get("context")
    if isinstance(context, dict):
        sentences = context.get("sentences", context.get("content"))
        original["context"] = _pairs(at, "context", context.get("title"), sentences)
    facts = row.get("supporting_facts")
    if isinstance(facts, dict):
        pairs = _pairs(at, "supporting_facts", facts.get("title"), facts.get("sent_id"))
        original["supporting_facts"] = pairs
    return original


def parse_hub_row(row: Any, source: str, index: int) -> Example:
    """:func:`parse_row` for a hub row."""
    if not isinstance(row, dict):
        raise DataError(f"{where(source, index)}: must be a mapping, got {type_name(row)}")
    return parse_row(from_hub(row, source, index), source, index)


def _pairs(at: str, field: str, firsts: Any, seconds: Any) -> list[list]:
    # zip would silently drop the tail of the longer column
    if not (isinstance(firsts, list) and isinstance(seconds, list)) or len(firsts) != len(seconds):
        sizes = [len(c) if isinstance(c, list) else type_name(c) for c in (firsts, seconds)]
        raise field_error(at, field, "two columns (lists) of equal length", f"sizes {sizes}")
    return [[a, b] for a, b in zip(firsts, seconds, strict=True)]
