"""SQLite cache of language-model responses, so no call to a large LM is ever paid twice.

One row per (backend, model, kind, prompt, decoding params, sample index): the key is the
SHA-256 of their canonical JSON. Rows are committed as they arrive, so a crash keeps everything
already answered. A ``meta`` table marks the file as ours; anything else is refused loudly
rather than read as a silent wrong answer.
"""

import hashlib
import json
import sqlite3
from pathlib import Path

SCHEMA_VERSION = "1"


class CacheError(RuntimeError):
    """The cache file cannot be used (corrupt, foreign or from another schema version)."""


class ResponseCache:
    """Key-value store of JSON-serialisable responses in one SQLite file.

    Args:
        path: file to create or open; parent directories are created.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            raise CacheError(
                f"{self.path} is not a readable SQLite file ({e}); move it away"
            ) from e
        if not tables:  # another process may create it now (DDP ranks): one idempotent write
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")  # waits for the other's creation to commit
                for table in ("meta", "responses"):
                    self._db.execute(
                        f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT)"
                    )
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('lmcot_cache', ?)", (SCHEMA_VERSION,)
                )
        elif not {"meta", "responses"} <= tables:
            raise CacheError(
                f"{self.path} is an SQLite file but not an lmcot cache (tables {tables})"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='lmcot_cache'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            raise CacheError(
                f"{self.path} is an lmcot cache of schema {row and row[0]!r}, expected "
                f"{SCHEMA_VERSION!r}; move it away or point the cache path elsewhere"
            )

    @staticmethod
    def key(cache_id: str, kind: str, prompt: str, params: dict, sample: int) -> str:
        """Stable key of one response: identical inputs give the identical key in any process."""
        blob = json.dumps([cache_id, kind, prompt, params, sample], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict:
        """Return the cached responses among ``keys`` (missing keys are absent)."""
        found = {}
        for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT key, value FROM responses WHERE key IN ({marks})", part
            )
            try:
                found |= {k: json.loads(v) for k, v in rows}
            except json.JSONDecodeError as e:
                raise CacheError(f"{self.path} holds a corrupt entry ({e})") from e
        return found

    def put_many(self, items: dict) -> None:
        """Store responses and commit at once, so they survive a crash right after."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
