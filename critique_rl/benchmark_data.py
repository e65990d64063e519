"""The benchmarks the project knows by name: the registry (data/benchmarks.yaml, installed as
``critique_rl.data``), pulled copies in a local data directory, and where a name is loaded from.

``load_benchmark(name)`` reads the pulled copy ``<data dir>/<file>`` when it exists, else the hub
dataset through `datasets`, else fails in one line saying how to get it. ``pull`` fetches a
benchmark through the same loading code (from the hub, or from any file or hub id given as its
source) and writes its rows unchanged as JSONL, after checking that every row maps.

    >>> b = BENCHMARKS["math500"]
    >>> b.source.path, b.source.split, b.file, b.rows
    ('HuggingFaceH4/MATH-500', 'test', 'benchmarks/math500/test.jsonl', 500)
    >>> benchmark_spec("gsm8k", "/data").path
    '/data/gsm8k/test.jsonl'
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from critique_rl.config import ConfigError, DatasetSpec, dataset_spec
from critique_rl.datasets_io import DatasetError, Example, examples_from_rows, load_examples, load_rows

REGISTRY_PACKAGE, REGISTRY_FILE = "critique_rl.data", "benchmarks.yaml"
DATA_ENV = "CRITIQUE_RL_DATA"


@dataclass(frozen=True)
class Benchmark:
    name: str
    source: DatasetSpec   # the hub dataset (path = hub id, config, split) and its field mapping
    file: str             # the pulled copy, relative to the data directory
    rows: int
    license: str
    about: str

    def pulled(self, data_root: str | Path = "") -> DatasetSpec:
        """The spec of the pulled copy under ``data_dir(data_root)``: the same fields, a local file."""
        return dataclasses.replace(self.source, path=str(data_dir(data_root) / self.file), config="")


def _load_registry() -> dict[str, Benchmark]:
    text = (resources.files(REGISTRY_PACKAGE) / REGISTRY_FILE).read_text()
    where = f"{REGISTRY_PACKAGE}/{REGISTRY_FILE}"
    keys = {f.name for f in dataclasses.fields(Benchmark)} - {"name"}
    registry = {}
    for name, entry in yaml.safe_load(text).items():
        if not isinstance(entry, dict) or set(entry) != keys:
            raise ConfigError(f"{where}: {name}: expected the keys {', '.join(sorted(keys))}, got {entry!r}")
        registry[name] = Benchmark(name=name, source=dataset_spec({"name": name, **entry["source"]}, f"{where}: {name}.source"),
                                   file=entry["file"], rows=int(entry["rows"]), license=entry["license"], about=entry["about"])
    return registry


BENCHMARKS: dict[str, Benchmark] = _load_registry()


def data_dir(data_root: str | Path = "") -> Path:
    """Where pulled copies lie: ``data_root`` (benchmarks.data_root) when set, else $CRITIQUE_RL_DATA,
    else critique-rl/data in the user's cache folder ($XDG_CACHE_HOME, else ~/.cache)."""
    if str(data_root):
        return Path(data_root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "critique-rl" / "data"


def benchmark_names(text: str) -> list[str]:
    """'math500, aime24' -> ['math500', 'aime24']"""
    return [n.strip() for n in text.split(",") if n.strip()]


def benchmark(name: str) -> Benchmark:
    """The registry entry ``name``; an unknown name fails listing the known ones."""
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DatasetError(f"unknown benchmark {name!r}; {hint}known: {', '.join(BENCHMARKS)} "
                           f"(any other dataset: critique-rl eval --dataset SPEC.yaml)")
    return BENCHMARKS[name]


def benchmark_spec(name: str, data_root: str | Path = "") -> DatasetSpec:
    """The spec of benchmark ``name``'s pulled copy under ``data_dir(data_root)``."""
    return benchmark(name).pulled(data_root)


def load_benchmark(name: str, data_root: str | Path = "", limit: int = 0, head: int = 0) -> list[Example]:
    """Benchmark ``name`` as Examples: its pulled copy when there is one, else the hub dataset; else
    one line saying how to get it (a HubUnreachable when the hub could not be reached).
    ``limit`` and ``head`` are those of DatasetSpec.limit and load_examples."""
    b = benchmark(name)
    pulled = b.pulled(data_root)
    if Path(pulled.path).is_file():
        return load_examples(dataclasses.replace(pulled, limit=limit), head)
    try:
        return load_examples(dataclasses.replace(b.source, limit=limit), head)
    except DatasetError as err:
        raise type(err)(f"benchmark {name} is not pulled (no {pulled.path}) and could not be loaded from the hub "
                        f"({err}): run `critique-rl data pull {name}` on a machine with network and copy the file to "
                        f"that path") from None


@dataclass(frozen=True)
class Pulled:
    name: str
    path: Path
    rows: int          # rows written (0 when the copy was already there)
    note: str = ""     # what the user should know: already pulled, another row count than the registry's


def pull(name: str, data_root: str | Path = "", source: str = "", force: bool = False) -> Pulled:
    """Fetch benchmark ``name`` into ``data_dir(data_root)/<file>``: from its hub dataset, or from
    ``source`` (a local file or folder, or another hub id) read with the registry's field mapping.
    Every row must map to a question and an answer; the rows are written unchanged, all fields kept."""
    b = benchmark(name)
    target = data_dir(data_root) / b.file
    if target.is_file() and not force:
        return Pulled(name, target, 0, "already pulled (--force pulls it again)")
    spec = b.source
    if source:
        local = Path(source).exists() or Path(source).suffix in (".jsonl", ".json", ".parquet")
        spec = dataclasses.replace(spec, path=source, config="" if local else spec.config)
    rows, columns = load_rows(spec)
    examples_from_rows(spec, rows, columns)  # a copy that evaluation would refuse is not written
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for row in rows:
            # default=str: hub features without a JSON form (dates, images) are kept as text
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    partial.replace(target)  # a pull cut short never leaves a copy that looks complete
    note = "" if len(rows) == b.rows else f"{len(rows)} rows where the registry says {b.rows}: the source differs"
    return Pulled(name, target, len(rows), note)
