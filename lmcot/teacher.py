"""Teacher stage: the rationales the small LM is distilled on, as a resumable id-keyed JSONL.

Two teachers with one calling shape, ``teacher(examples, reader) -> Iterator[dict]``:

- ``LLMTeacher``: the large LM writes chain-of-thought rationales with the few-shot ``cot``
  prompt (the paper's stage 1); samples with a wrong answer are written but not kept.
- ``SupportingFactsTeacher``: the gold supporting sentences; no LM, so cheap and offline.

A row is one (example id, sample index): ``{"id", "sample", "rationale", "answer", "gold",
"correct", "kept", "teacher", "model", "prompt_version"}``. ``RationaleStore`` writes the rows one
chunk of examples at a time, flushed and fsynced, so a kill (Ctrl-C, kill -9) loses at most the
chunk in flight and a re-run does only the examples not yet done. The file lives in the teacher's
artifact directory (:mod:`lmcot.artifacts`): the same rows, teacher and reader reuse it.
"""

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from lmcot.artifacts import artifact, is_rank_zero, write_atomic
from lmcot.console import console
from lmcot.data.example import Example
from lmcot.lm.base import LM
from lmcot.metrics import exact_match
from lmcot.progress import progress
from lmcot.prompts import FewShotPrompt, split_rationale

log = logging.getLogger(__name__)
RATIONALES = "rationales.jsonl"  # the teacher artifact's file


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row(teacher, example: Example, **fields) -> dict:
    # fields: sample, rationale, answer, correct, kept, and where known model, prompt_version
    row = {"id": example.id, "sample": 0, "rationale": "", "answer": "", "gold": example.golds}
    row |= {"correct": False, "kept": False, "teacher": type(teacher).__name__, "model": None}
    return row | {"prompt_version": None} | fields


class SupportingFactsTeacher:
    """Rationale = the example's gold supporting sentences, then a conclusion naming the answer.

    Deterministic and free (no LM call), for cheap runs and the offline default. Why the
    conclusion: with the bare supporting sentences as rationale, our offline 135M reader's EM on
    synthetic data did not improve (0.33, vs 0.35 without a rationale); with the conclusion
    appended it reached 0.70. The paper's LLM-written rationales also end in their conclusion.

    Args:
        conclusion: ``str.format`` pattern with ``{answer}``, appended after the sentences;
            None: the bare sentences.
        chunk_size: examples per written chunk.
    """

    needs_reader = False
    num_samples = 1  # rows per example

    def __init__(
        self, conclusion: str | None = "So the answer is {answer}.", chunk_size: int = 256
    ):
        self.conclusion = conclusion
        self.chunk_size = chunk_size

    def rationale(self, example: Example) -> str:
        """The supporting sentences joined with spaces, then the conclusion.

        >>> ex = Example("1", "Where was Ada born?", [("Ada", ["x.", " Ada was born in Lyon. "])],
        ...              "Lyon", supporting_facts=[("Ada", 1)])
        >>> SupportingFactsTeacher().rationale(ex)
        'Ada was born in Lyon. So the answer is Lyon.'
        """
        parts = example.supporting_sentences()
        if self.conclusion is not None:
            parts.append(self.conclusion.format(answer=example.answer))
        return " ".join(parts).strip()

    def __call__(self, examples: list[Example], reader: LM | None = None) -> Iterator[dict]:
        for ex in examples:
            # without supporting facts the rationale would only restate the answer: not kept
            kept = bool(ex.supporting_facts)
            yield _row(
                self, ex, rationale=self.rationale(ex), answer=ex.answer, correct=True, kept=kept
            )


def judge_samples(outputs: list[str], golds: list[str], keep: str = "first") -> list[tuple]:
    """Split each CoT output into (rationale, answer, correct, kept).

    ``correct``: EM of the answer against the golds. ``kept``: correct, a non-empty rationale,
    and, with ``keep="first"``, the first such sample; with ``keep="all"``, every such sample
    whose whitespace-normalised rationale was not kept before.

    >>> outs = [" A is in Y.\\nAnswer: Y", " A is in X.\\nAnswer: X", "A is in X.\\nAnswer: X"]
    >>> [(c, k) for _, _, c, k in judge_samples(outs, ["X"], keep="all")]
    [(False, False), (True, True), (True, False)]
    >>> outs.append(" A is in the X.\\nAnswer: the X")
    >>> [k for *_, k in judge_samples(outs, ["X"], keep="first")]
    [False, True, False, False]
    >>> [k for *_, k in judge_samples(outs, ["X"], keep="all")]
    [False, True, False, True]
    """
    judged, kept_texts = [], set()
    for text in outputs:
        rationale, answer = split_rationale(text)
        correct = exact_match(answer, golds) == 1.0
        norm = " ".join(rationale.split())
        kept = correct and bool(norm) and norm not in kept_texts
        kept = kept and (keep == "all" or not kept_texts)
        if kept:
            kept_texts.add(norm)
        judged.append((rationale, answer, correct, kept))
    return judged


class LLMTeacher:
    """The large LM writes CoT rationales; those ending in the gold answer (EM) are kept.

    One ``generate`` call per chunk of examples asks for all ``num_samples`` samples at once,
    through the reader's cache, so a re-run costs no LM call.

    Args:
        prompt: the few-shot CoT prompt (``prompts.cot``); its stop strings and token budget apply.
        num_samples: samples per question; 1 decodes greedily (temperature and top_p ignored).
        temperature: sampling temperature when ``num_samples > 1``.
        top_p: nucleus mass when ``num_samples > 1``.
        keep: ``first`` keeps the first correct sample per question, ``all`` every correct one
            with a distinct rationale. Wrong samples are written too, with ``kept: false``.
        seed: seeds sampling (with the sample index, in the cache key).
        chunk_size: examples per ``generate`` call and per written chunk.
    """

    needs_reader = True

    def __init__(
        self,
        prompt: FewShotPrompt,
        num_samples: int = 1,
        temperature: float = 0.7,
        top_p: float = 0.95,
        keep: str = "first",
        seed: int = 0,
        chunk_size: int = 32,
    ):
        if num_samples < 1:
            raise ValueError(f"teacher.num_samples must be >= 1, got {num_samples}")
        if keep not in ("first", "all"):
            raise ValueError(f"teacher.keep must be 'first' or 'all', got {keep!r}")
        if num_samples > 1 and temperature <= 0:
            raise ValueError(
                f"teacher.num_samples={num_samples} needs teacher.temperature > 0, got "
                f"{temperature} (greedy samples are identical); or set teacher.num_samples=1"
            )
        self.prompt, self.num_samples, self.keep = prompt, num_samples, keep
        self.chunk_size = chunk_size
        if num_samples == 1:
            self.params = replace(prompt.params, temperature=0.0)
        else:
            self.params = replace(prompt.params, temperature=temperature, top_p=top_p, seed=seed)

    def __call__(self, examples: list[Example], reader: LM) -> Iterator[dict]:
        version = getattr(self.prompt, "version", None)
        for chunk in _chunks(list(examples), self.chunk_size):
            prompts = [self.prompt.render(ex) for ex in chunk]
            outputs = reader.generate(prompts, self.params, n=self.num_samples)
            for ex, samples in zip(chunk, outputs):
                judged = judge_samples(samples, ex.golds, self.keep)
                for i, (rationale, answer, correct, kept) in enumerate(judged):
                    yield _row(
                        self, ex, sample=i, rationale=rationale, answer=answer, correct=correct,
                        kept=kept, model=reader.cache_id, prompt_version=version,
                    )  # fmt: skip


class StoreError(RuntimeError):
    """A teacher JSONL that is corrupt beyond what a killed write leaves behind."""


class RationaleStore:
    """Append-only JSONL of teacher rows, unique per (id, sample), safe to kill at any moment.

    On open, what a kill can leave is repaired with a warning: a partially written last line is
    dropped, and so are the rows of an id with fewer than ``samples_per_id`` rows (its chunk was
    cut), so that id is redone whole. Rows already present are never written again.

    Args:
        path: the JSONL file; it and its parent directories are created on the first append.
        samples_per_id: rows a finished id has (the teacher's ``num_samples``).
        repair: write the repaired file back; ``False`` for a reader that must never write
            (a DDP rank other than zero, while rank zero may be appending).
    """

    def __init__(self, path: str | Path, samples_per_id: int = 1, repair: bool = True):
        self.path = Path(path)
        self.samples_per_id = samples_per_id
        self.repair = repair
        self._keys: set[tuple[str, int]] = set()
        self._per_id: Counter = Counter()
        self._kept_ids: set[str] = set()
        self._kept = self._correct = 0
        if self.path.exists():
            for row in self._load():
                self._index(row)

    def _load(self) -> list[dict]:
        *lines, tail = self.path.read_bytes().split(b"\n")
        repaired = bool(tail)  # a file we wrote ends in a newline; anything after it was cut
        if tail:
            log.warning(
                "%s: dropping a partially written last line (%d bytes): a previous run "
                "was killed while writing",
                self.path,
                len(tail),
            )
        rows, seen = [], set()
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                key = (row["id"], row["sample"])
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as e:
                if n == len(lines):  # a cut last write can also end in a bad line
                    log.warning("%s: dropping unreadable last line %d", self.path, n)
                    repaired = True
                    continue
                raise StoreError(
                    f"{self.path} line {n} is not a teacher row ({e!r}); it is corrupt beyond a "
                    "killed write: move it away to regenerate it"
                ) from e
            if key in seen:
                repaired = True
                continue
            seen.add(key)
            rows.append(row)
        counts = Counter(r["id"] for r in rows)
        cut = {i for i, c in counts.items() if c < self.samples_per_id}
        if cut:
            log.warning(
                "%s: dropping %d id(s) with fewer than %d rows, to redo them whole",
                self.path,
                len(cut),
                self.samples_per_id,
            )
            rows = [r for r in rows if r["id"] not in cut]
        if (repaired or cut) and self.repair:
            self._rewrite(rows)
        return rows

    def _rewrite(self, rows: list[dict]) -> None:
        # a kill during the repair leaves the old file intact
        write_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def _index(self, row: dict) -> None:
        self._keys.add((row["id"], row["sample"]))
        self._per_id[row["id"]] += 1
        self._kept += bool(row.get("kept"))
        self._correct += bool(row.get("correct"))
        if row.get("kept"):
            self._kept_ids.add(row["id"])

    def done_ids(self) -> set[str]:
        """Ids that have all their rows."""
        return {i for i, c in self._per_id.items() if c >= self.samples_per_id}

    def pending(self, examples: Iterable[Example]) -> list[Example]:
        """The examples still to do, in their order."""
        done = self.done_ids()
        return [ex for ex in examples if ex.id not in done]

    def append(self, rows: Iterable[dict]) -> int:
        """Write the rows not yet stored, as one flushed and fsynced write; return how many."""
        new, keys = [], set()
        for row in rows:
            key = (row["id"], row["sample"])
            if key not in self._keys and key not in keys:
                keys.add(key)
                new.append(row)
        if not new:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            f.flush()
            os.fsync(f.fileno())
        for row in new:
            self._index(row)
        return len(new)

    def rows(self) -> list[dict]:
        """All rows, in file order."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def kept(self) -> list[dict]:
        """The rows to distil on (``kept: true``), in file order."""
        return [r for r in self.rows() if r.get("kept")]

    def summary(self) -> dict:
        """Counts, and ``kept_fraction``: the share of questions with at least one kept row."""
        questions, rows = len(self._per_id), sum(self._per_id.values())
        return {
            "questions": questions, "rows": rows, "kept": self._kept, "correct": self._correct,
            "kept_fraction": len(self._kept_ids) / questions if questions else 0.0,
            "correct_fraction": self._correct / rows if rows else 0.0,
        }  # fmt: skip


def fill(store: RationaleStore, teacher, examples: list[Example], reader: LM | None = None) -> int:
    """Run ``teacher`` on the examples ``store`` lacks, one stored chunk at a time; return rows.

    One writer per file at a time: ``run_teacher`` holds a lock around this.
    """
    pending, written = store.pending(examples), 0
    done = len(examples) - len(pending)
    with progress(len(examples), "teacher", "question", initial=done) as bar:
        for chunk in _chunks(pending, getattr(teacher, "chunk_size", 64)):
            written += store.append(teacher(chunk, reader))
            bar.update(len(chunk))
    return written


def teacher_path(cfg: DictConfig) -> Path:
    """The rationale JSONL of ``cfg``'s teacher artifact (keyed in :mod:`lmcot.artifacts`)."""
    return artifact(cfg, "teacher").dir / RATIONALES


def run_teacher(cfg: DictConfig) -> dict[str, float]:
    """Teacher stage: write (or finish, or reuse) the rationale JSONL of ``cfg``'s train split.

    The reader is built only when the teacher needs one and some example is not done yet, so a
    complete file costs no LM call (not even a model load). Under DDP/FSDP only rank zero
    writes; the other ranks (started by rank zero's Trainer, after this stage) read its file.
    """
    examples = instantiate(cfg.data, split="train")
    if not examples:
        raise ValueError(f"data config {cfg.data._target_} produced no training examples")
    teacher = instantiate(cfg.teacher)
    art = artifact(cfg, "teacher")
    path = art.dir / RATIONALES
    if not is_rank_zero():
        per_id = getattr(teacher, "num_samples", 1)
        store = RationaleStore(path, samples_per_id=per_id, repair=False)
        if pending := store.pending(examples):
            raise RuntimeError(
                f"{path} lacks {len(pending)} of {len(examples)} training questions, and only "
                "rank zero writes it: run stages=[teacher] in one process first (a launcher that "
                "starts every rank at once, such as torchrun or srun, does not wait for it)"
            )
        return {}
    with art.lock():
        art.write_manifest()
        store = RationaleStore(path, samples_per_id=getattr(teacher, "num_samples", 1))
        pending = store.pending(examples)
        if pending:
            log.info("teacher: %d of %d questions to do -> %s", len(pending), len(examples), path)
            reader = instantiate(cfg.reader) if getattr(teacher, "needs_reader", True) else None
            fill(store, teacher, pending, reader)
        else:
            log.info("teacher: reusing %s (complete, %d questions)", path, len(examples))
    s = store.summary()
    log.info("teacher: kept fraction %.3f (%d questions)", s["kept_fraction"], s["questions"])
    if not s["kept"]:
        log.warning("teacher: no rationale kept in %s: distillation has nothing to learn", path)
    console().print(
        f"[bold]teacher[/bold] {type(teacher).__name__}: {s['questions']} questions, "
        f"{s['rows']} rows, {s['correct']} correct, {s['kept']} kept; "
        f"kept fraction [bold]{s['kept_fraction']:.3f}[/bold]  [dim]{path}[/dim]"
    )
    return {
        "teacher/kept_fraction": s["kept_fraction"],
        "teacher/correct_fraction": s["correct_fraction"],
        "teacher/rows": s["rows"],
        "teacher/kept": s["kept"],
    }
