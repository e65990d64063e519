"""Critic outputs on disk: one sqlite file, keyed by a hash of everything that shapes an output.

The key covers backend, model, the rendered prompt, the sampling parameters and the sample
index (the n-th regeneration of a prompt is its own entry), so a rerun replays the same
critiques and a changed template or temperature misses. Only usable outputs are stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


class CritiqueCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The trainer may call the critic from its background thread (critic.overlap); one call at a time.
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS critiques (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)")
        self.db.commit()

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> tuple[str, int, int] | None:
        """(text, prompt_tokens, completion_tokens) stored under ``key``, or None."""
        return self.db.execute("SELECT text, prompt_tokens, completion_tokens FROM critiques WHERE key = ?", (key,)).fetchone()

    def put_many(self, rows: list[tuple[str, str, int, int]]) -> None:
        """Store (key, text, prompt_tokens, completion_tokens) rows in one transaction."""
        self.db.executemany("INSERT OR REPLACE INTO critiques VALUES (?, ?, ?, ?)", rows)
        self.db.commit()

    def close(self) -> None:
        self.db.close()
