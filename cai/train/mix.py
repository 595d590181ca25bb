"""The training rows of a stage from one source or a mix of several: `--data runs/cai:0.7 --data
helpful.jsonl:0.3`, or a recipe's `datasets:` list of `{path, weight | rows, split, name}`.

How many rows each source gives:

- weights (every source has one, or none does): each source's share of the training rows. The
  mix is the largest that repeats no row (the rule of TRL's `DatasetMixtureConfig.fraction`): the
  source with the fewest rows for its weight gives all of them, the others a sample of their
  share. `mix_rows: N` (`--mix-rows`) sets the size instead; a source whose share asks for more
  rows than it holds then gives all its rows once (capped: the log and the card say so), or with
  `oversample` (`--oversample`) repeats rows to give its share, every row once before any twice.
- `rows: N`: exactly N rows of that source (more than it holds: exit 2, or repeated with
  `oversample`); a source with neither weight nor rows gives all its rows.

A row is drawn without replacement, seeded by the recipe's `data_seed` (else `seed`) and the
source's name, and the mix is shuffled with the same seed: one seed gives the same rows in the
same order. One source with no weight is taken whole and in its order, as `cai train` always
read it. Every training row carries a `source` column (the source's name, its path as given);
the card's sources table and metrics.json's `data.sources` list each source's sha256, the rows
it gave and its share.

What this reuses: `datasets` reads the sources (`load_dataset("json" | "parquet")` for a file, with
its split syntax such as `train[:80%]`, and `load_from_disk` for a datasets folder, both
memory-mapped Arrow), converts each source's rows for the stage (`Dataset.map`, batch by batch),
selects the drawn rows (`Dataset.select`, an index over the Arrow table), and mixes them
(`concatenate_datasets`, then `Dataset.shuffle(seed)`). Neither of its mixers that draw rows is
used as is: TRL's `get_dataset` (`trl.scripts`) keeps the first rows of each dataset, unseeded,
and reads only what `load_dataset` reads (no run folders); `interleave_datasets(probabilities,
seed)` draws each row's source at random, so the counts only approach the weights and it stops or
repeats when a source runs out, where the card records exact counts per source.

A run folder is exported by `cai export`'s own code, streamed (`cai.export.iter_rows`), and its rows
converted a batch at a time into an in-memory Arrow table; a file or datasets folder is read
memory-mapped. Only a file Arrow cannot read as one table (a column a string in one row and a
list in another) is read as Python rows, as `cai train` always read it.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cai.errors import UsageError

if TYPE_CHECKING:
    from cai.train.data import DataInfo, SourceInfo
    from cai.train.settings import Recipe
    from cai.train.stage import Stage

SOURCE = "source"  # the column every training row of a mixing stage carries
KEYS = ("path", "weight", "rows", "split", "name")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WEIGHTED = re.compile(rf"^(?P<path>.+):(?P<weight>{_NUMBER})$")
_ROWS = re.compile(r"^(?P<path>.+):rows=(?P<rows>[-+]?\d+)$")


@dataclass(frozen=True)
class SourceSpec:
    """One source as asked for: a path, and a weight or a row count (or neither: all its rows)."""

    path: str
    weight: float | None = None
    rows: int | None = None
    split: str | None = None  # a datasets folder's split, or `load_dataset`'s split of a file (`train[:50%]`)
    name: str | None = None  # the `source` column (default: the path as given)

    @property
    def label(self) -> str:
        return self.name or self.path

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}


def _weight(value: Any, where: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise UsageError(f"{where}: a weight must be a positive number, got {value!r}")
    return float(value)


def _rows(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: `rows` must be a whole number of rows, 1 or more, got {value!r}")
    return value


def parse_data(value: str) -> SourceSpec:
    """`--data PATH`, `PATH:WEIGHT` or `PATH:rows=N`. Only a trailing `:number` is a weight, so a
    path may hold colons (`runs/2024-01-01T12:00`); a path that exists as written is never split."""
    value = str(value)
    if not value.strip():
        raise UsageError("--data: empty")
    if Path(value).expanduser().exists():
        return SourceSpec(value)
    head, sep, tail = value.rpartition(":")
    m = _ROWS.match(value) or _WEIGHTED.match(value)
    if m:
        try:
            if "rows" in m.groupdict():
                return SourceSpec(m["path"], rows=_rows(int(m["rows"]), f"--data {value}"))
            return SourceSpec(m["path"], weight=_weight(float(m["weight"]), f"--data {value}"))
        except UsageError:
            # `runs/2024-01-01T12:00`: neither it nor the part before the colon exists, so no weight is
            # refused; reading it says there is no such file.
            if Path(m["path"]).expanduser().exists():
                raise
            return SourceSpec(value)
    if sep and head and Path(head).expanduser().exists():
        raise UsageError(f"--data {value}: after the last ':' comes the weight, a positive number "
                         f"(or rows=N), got {tail!r}")
    return SourceSpec(value)


def recipe_sources(items: Any, where: str) -> list[SourceSpec]:
    """A recipe's `datasets:` list: each item `{path, weight | rows, split, name}` (or a `--data` string)."""
    if not isinstance(items, list) or not items:
        raise UsageError(f"{where}: `datasets:` must be a list of sources, each {{path, weight or rows, split}}")
    out = []
    for i, item in enumerate(items):
        at = f"{where}: datasets[{i}]"
        if isinstance(item, str):
            out.append(parse_data(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"].strip():
            raise UsageError(f"{at}: expected {{path: ..., weight: ... or rows: ..., split: ...}}, got {item!r}")
        unknown = [k for k in item if k not in KEYS]
        if unknown:
            import difflib

            near = {k: difflib.get_close_matches(k, KEYS + ("fraction",), n=1) for k in unknown}
            hint = "".join(f" ({k}: did you mean {n[0] if n[0] != 'fraction' else 'weight'}?)"
                           for k, n in near.items() if n)
            raise UsageError(f"{at}: unknown key {', '.join(map(repr, unknown))}{hint}; a source takes "
                             f"{', '.join(KEYS)}")
        if item.get("weight") is not None and item.get("rows") is not None:
            raise UsageError(f"{at}: give a source a weight or rows, not both")
        for key in ("split", "name"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise UsageError(f"{at}: `{key}` must be a string, got {item[key]!r}")
        out.append(SourceSpec(item["path"], weight=None if item.get("weight") is None else _weight(item["weight"], at),
                              rows=None if item.get("rows") is None else _rows(item["rows"], at),
                              split=item.get("split"), name=item.get("name")))
    check_sources(out, where)
    return out


def check_sources(sources: list[SourceSpec], where: str = "--data") -> None:
    """Every source weighted or none; `rows:` only beside other unweighted sources; no name twice."""
    weighted = [s for s in sources if s.weight is not None]
    if weighted and len(weighted) < len(sources):
        rest = ", ".join(s.label for s in sources if s.weight is None)
        raise UsageError(f"{where}: give every source a weight or none ({rest} has none): weights are shares of "
                         "the mix, `rows: N` (PATH:rows=N) exact counts of an unweighted one")
    seen: set[str] = set()
    for s in sources:
        if s.label in seen:
            raise UsageError(f"{where}: the source {s.label} is named twice; give one a `name:` in the recipe's "
                             "datasets: list")
        seen.add(s.label)


def as_sources(data: Any) -> list[SourceSpec]:
    """What `run_stage`'s `data` may be: a path, a `--data` string, or a list of them (or of SourceSpec/dicts)."""
    if data is None or (isinstance(data, (list, tuple)) and not data):
        return []
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    out = []
    for item in items:
        if isinstance(item, SourceSpec):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(recipe_sources([item], "data"))
        else:
            out.append(parse_data(str(item)))
    check_sources(out)
    return out


def mix_seed(recipe: Recipe) -> int:
    """The recipe's `data_seed`, else its `seed` (TRL's default when it sets neither)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(recipe.config_cls)}
    for key in ("data_seed", "seed"):
        value = recipe.trl.get(key, defaults.get(key))
        if value is not None:
            return int(value)
    return 42


# ---------------------------------------------------------------- how many rows of each

@dataclass
class Take:
    rows: int  # training rows drawn
    asked: int | None = None  # what its weight asked for, when more than it holds
    capped: bool = False
    repeated: bool = False


def _apportion(total: int, shares: list[float]) -> list[int]:
    """`total` split by `shares` in whole rows (largest remainders), summing to `total`."""
    raw = [total * s for s in shares]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[:total - sum(out)]:
        out[i] += 1
    return out


def plan(sources: list[SourceSpec], sizes: list[int], *, mix_rows: int | None = None,
         oversample: bool = False) -> tuple[list[Take], str]:
    """Rows to draw from each source (of `sizes` training rows each), and a line on the mix's size."""
    if any(s.weight is not None for s in sources):
        total_w = sum(s.weight for s in sources)
        shares = [s.weight / total_w for s in sources]
        if mix_rows is not None:
            quotas = _apportion(mix_rows, shares)
            why = f"mix_rows {mix_rows} split by the weights"
        else:
            # The source with the fewest rows for its share gives all of them; the others their share of that
            # mix (never more than they hold: their rows for their share are at least as many).
            ratios = [n / s for n, s in zip(sizes, shares)]
            scarce = min(range(len(sources)), key=lambda i: ratios[i])
            quotas = [min(n, math.floor(sizes[scarce] * s / shares[scarce] + 0.5)) for n, s in zip(sizes, shares)]
            quotas[scarce] = sizes[scarce]
            why = (f"the largest mix that repeats no row: {sources[scarce].label} gives all its {sizes[scarce]} "
                   "rows, the fewest for its weight" if len(sources) > 1 else "one source: all its rows")
        takes = []
        for q, n in zip(quotas, sizes):
            if q <= n:
                takes.append(Take(q))
            elif oversample:
                takes.append(Take(q, repeated=True))
            else:
                takes.append(Take(n, asked=q, capped=True))
        return takes, why
    if mix_rows is not None:
        raise UsageError(f"mix_rows {mix_rows}: the size of a weighted mix, and no source has a weight "
                         "(PATH:WEIGHT, or `weight:` in the recipe's datasets: list)")
    takes = []
    for s, n in zip(sources, sizes):
        k = s.rows if s.rows is not None else n
        if k > n and not oversample:
            raise UsageError(f"--data {s.label}: rows: {k} asks for more rows than it holds ({n}); ask for fewer, "
                             "or let it repeat rows with --oversample")
        takes.append(Take(k, repeated=k > n))
    return takes, "exact row counts" if any(s.rows is not None for s in sources) else "every row of each source"


def draw(n: int, k: int, seed: int, name: str):
    """Which of `n` rows to take `k` of: None for all in order, else indices, without replacement
    (past `n`, every row once before any twice), seeded by `seed` and the source's name."""
    import numpy as np

    if k == n:
        return None
    rng = np.random.default_rng([seed % 2**63, zlib.crc32(name.encode())])
    reps, rest = divmod(k, n)
    picked = np.sort(rng.choice(n, size=rest, replace=False))
    return np.concatenate([np.tile(np.arange(n), reps), picked]) if reps else picked


# ---------------------------------------------------------------- reading a source

def _describe(columns: list[str]) -> str:
    have = set(columns)
    if "messages" in have:
        kind = "SFT rows"
    elif {"prompt", "chosen", "rejected"} <= have:
        kind = "preference rows"
    elif {"prompt", "completion"} <= have:
        kind = "prompt/completion rows"
    else:
        kind = "rows"
    return f"{kind} (columns: {', '.join(columns) or 'none'})"


def check_kind(spec: Stage, name: str, columns: list[str]) -> None:
    """Exit 2 naming the source and the columns it lacks, when it is not the stage's kind of rows."""
    if not spec.columns or any(set(alt) <= set(columns) for alt in spec.columns):
        return
    best = min(spec.columns, key=lambda alt: len(set(alt) - set(columns)))
    missing = [c for c in best if c not in columns]
    raise UsageError(f"--data {name}: {_describe(columns)} lack {', '.join(missing)}: {spec.name} trains on "
                     f"{spec.data_help}")


@dataclass
class _Opened:
    spec: SourceSpec
    kind: str
    ds: Any = None  # the raw rows as a Dataset (file, datasets folder)
    stream: Any = None  # the raw rows one by one (a run folder's export; a file Arrow could not read)
    info: DataInfo | None = None
    file: str = ""
    sha256: str = ""


def _arrow_rows(ds, columns: list[str]):
    """Rows of just these columns, batch by batch (for the provenance columns)."""
    def rows():
        cols = [c for c in columns if c in ds.column_names]
        if not cols:
            return
        for batch in ds.select_columns(cols).iter(batch_size=10_000):
            yield from (dict(zip(batch, vals)) for vals in zip(*batch.values()))
    return rows


def _open(src: SourceSpec, spec: Stage, recipe: Recipe, log) -> _Opened:
    """Read a source without converting it, and check it is the stage's kind of rows."""
    from cai.models import sha256_file
    from cai.train.data import DataInfo, is_run_folder, provenance, read_data, run_folder_file, stream_run_folder

    name, p = src.label, Path(src.path).expanduser()
    filter = getattr(recipe.cai, "filter", "none")
    if is_run_folder(p):
        if src.split:
            raise UsageError(f"--data {name}: `split` is for files and datasets folders; a run folder has none")
        file = run_folder_file(p, spec.data, spec.fallback)
        if spec.data == "dpo" and spec.fallback is None and not file.exists():
            raise UsageError(f"--data {name}: a run folder not judged yet lacks {file.name} (the judged pairs "
                             f"{spec.name} trains on): run `cai judge {src.path}` first")
        stream, info = stream_run_folder(p, spec.data, fallback=spec.fallback, keep_flagged=recipe.cai.keep_flagged,
                                         filter=filter)
        first = next(stream, None)  # the export's own checks (a judged run for --filter judged, ...) speak here
        if first is not None:
            check_kind(spec, name, list(first))
            stream = itertools.chain([first], stream)
        return _Opened(src, "run folder", stream=stream, info=info, file=str(file), sha256=sha256_file(file))
    if p.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--data {name}: neither a run folder (generations.jsonl) nor a datasets folder: "
                             f"{exc}") from None
        if isinstance(ds, DatasetDict):
            split = src.split or "train"
            if split not in ds:
                raise UsageError(f"--data {name}: no split {split!r} ({', '.join(ds)}); choose one with `split:`")
            ds = ds[split]
        elif src.split not in (None, "train"):
            raise UsageError(f"--data {name}: split {src.split!r}: the datasets folder holds one Dataset, no splits")
        files = [f["filename"] for f in ds.cache_files]
        if len(files) == 1:
            file, sha = files[0], sha256_file(Path(files[0]))
        else:  # several Arrow files (or none: a folder saved from memory): the hash of their hashes
            import hashlib

            file = f"{len(files)} Arrow files of {p}"
            sha = hashlib.sha256("\n".join(sha256_file(Path(f)) for f in sorted(files)).encode()).hexdigest()
        check_kind(spec, name, ds.column_names)
        from cai.export import rows_sha256

        # the card's `data sha256` stays the row hash `cai train` always gave a datasets folder
        info = DataInfo(str(p), "datasets folder", rows_sha256(ds), len(ds))
        provenance(info, _arrow_rows(ds, ["constitution", "constitution_sha256", "judge_agreement",
                                          "judge_below_floor"]))
        return _Opened(src, "datasets folder", ds=ds, info=info, file=file, sha256=sha)
    if not p.is_file():
        raise UsageError(f"--data {name}: no such file or folder")
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(p.suffix)
    if builder is None:
        raise UsageError(f"--data {name}: use .jsonl, .json, .parquet, a datasets folder or a run folder")
    sha = sha256_file(p)
    try:
        from datasets import load_dataset

        ds = load_dataset(builder, data_files=str(p), split=src.split or "train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; a split error is the user's
        if src.split:
            raise UsageError(f"--data {name}: split {src.split!r}: {exc}") from None
        # Rows Arrow cannot hold in one table (a column that is a string in one row and a list in another):
        # read as Python rows, as `cai train` always did, and checked row by row.
        rows, info = read_data(p, spec.data)
        log(f"data: {name}: read as Python rows (not one Arrow table: {type(exc).__name__})")
        if rows:
            check_kind(spec, name, sorted({k for r in rows for k in r}))
        return _Opened(src, "file", stream=iter(rows), info=info, file=str(p), sha256=sha)
    check_kind(spec, name, ds.column_names)
    info = DataInfo(str(p), "file", sha, len(ds))
    provenance(info, _arrow_rows(ds, ["constitution", "constitution_sha256", "judge_agreement", "judge_below_floor"]))
    return _Opened(src, "file", ds=ds, info=info, file=str(p), sha256=sha)


def _convert(opened: _Opened, spec: Stage):
    """The source's rows as the stage's training rows, each with its `source`, as a Dataset."""
    from datasets import Dataset

    from cai.train.data import fingerprint

    name, where = opened.spec.label, f"--data {opened.spec.label}"
    if opened.stream is not None:
        # Converted a batch at a time into Arrow tables: the rows never sit in one Python list.
        import pyarrow as pa
        from datasets.table import InMemoryTable

        tables, start = [], 0
        while batch := list(itertools.islice(opened.stream, 1000)):
            rows = spec.convert(batch, where, start=start)
            start += len(batch)
            for r in rows:
                r[SOURCE] = name
            tables.append(pa.Table.from_pylist(rows))
        opened.stream = None
        if not tables:
            return None
        return Dataset(InMemoryTable(pa.concat_tables(tables, promote_options="default")))

    def batch(b: dict, idx: list[int]) -> dict:
        # An Arrow row has every column of the file; a key another row had is None here, as if absent.
        raw = [{k: v for k, v in zip(b, vals) if v is not None} for vals in zip(*b.values())]
        out = spec.convert(raw, where, start=idx[0] if idx else 0)
        cols = {k: [r[k] for r in out] for k in (out[0] if out else {})}
        cols[SOURCE] = [name] * len(out)
        return cols

    ds = opened.ds
    if len(ds) == 0:
        return None
    return ds.map(batch, batched=True, with_indices=True, remove_columns=ds.column_names,
                  new_fingerprint=fingerprint(ds, "cai-train", spec.name, name), load_from_cache_file=False)


def _concatenate(parts: list):
    from datasets import concatenate_datasets

    first = parts[0].features
    # The same stage gives every source the same columns; their Arrow types can still differ (a column of
    # nulls in one file): cast to the first source's.
    parts = [p if p.features == first else p.cast(first) for p in parts]
    return concatenate_datasets(parts)


def _rows_hash(ds) -> str:
    import hashlib
    import json

    h = hashlib.sha256()
    for batch in ds.iter(batch_size=1000):
        for vals in zip(*batch.values()):
            h.update(json.dumps(dict(zip(batch, vals)), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def training_data(spec: Stage, data: Any, recipe: Recipe, log=print) -> tuple[Any, DataInfo]:
    """The rows `cai train` hands the stage's trainer and what its card says of them.

    `data` is what `--data` gave (a path, or a list of `PATH[:WEIGHT]` strings; none: the recipe's
    `datasets:` list). Sets `recipe.datasets` to the sources used (recipe.yaml records them). For a
    stage that mixes (`spec.convert`: sft, dpo, kto) the rows are a `datasets.Dataset` with a `source`
    column; for reward and rl a list of rows, from one source.
    """
    sources = as_sources(data)
    if sources and recipe.datasets:
        log("data: --data replaces the recipe's datasets: list")
    if not sources:
        if not recipe.datasets:
            raise UsageError("--data is required (or a `datasets:` list in the recipe)")
        sources = [SourceSpec(**d) for d in recipe.datasets]
    recipe.datasets = [s.as_dict() for s in sources]
    if spec.convert is None:
        return _one_source(spec, sources, recipe)

    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    bars = is_progress_bar_enabled()
    disable_progress_bars()  # the bars of every map over every source would bury the log
    try:
        return _mix(spec, sources, recipe, log)
    finally:
        if bars:
            enable_progress_bars()


def _one_source(spec: Stage, sources: list[SourceSpec], recipe: Recipe) -> tuple[list[dict], DataInfo]:
    """reward, rl: one source read as a list of rows, as ever, with its line of the sources table."""
    from cai.models import sha256_file
    from cai.train.data import SourceInfo, is_run_folder, read_data, run_folder_file

    src = sources[0]
    if len(sources) > 1 or src.weight is not None or src.rows is not None or src.split or src.name:
        raise UsageError(f"{spec.name}: one --data source, whole (mixing sources is for sft, dpo and kto)")
    raw, info = read_data(src.path, spec.data, fallback=spec.fallback, keep_flagged=recipe.cai.keep_flagged,
                          filter=getattr(recipe.cai, "filter", "none"))
    rows = spec.rows(raw, f"--data {src.path}")
    if is_run_folder(src.path):
        file = run_folder_file(src.path, spec.data, spec.fallback)
        file_sha = sha256_file(file)
    else:  # a file: its sha256; a datasets folder: the row hash its card has always shown
        file, file_sha = (info.path if info.kind == "file" else f"the rows of {info.path}"), info.sha256
    info.sources = [SourceInfo(src.path, info.path, info.kind, str(file), file_sha, len(rows), len(rows), 1.0,
                               info=info)]
    return rows, info


def _mix(spec: Stage, sources: list[SourceSpec], recipe: Recipe, log) -> tuple[Any, DataInfo]:
    from cai.train.data import DataInfo, SourceInfo

    opened = [_open(s, spec, recipe, log) for s in sources]  # every source checked before any is converted
    converted = []
    for o in opened:
        ds = _convert(o, spec)
        if ds is None:
            raise UsageError(f"--data {o.spec.label}: no rows to train on")
        converted.append(ds)
    sizes = [len(ds) for ds in converted]
    takes, why = plan(sources, sizes, mix_rows=getattr(recipe.cai, "mix_rows", None),
                      oversample=getattr(recipe.cai, "oversample", False))
    seed = mix_seed(recipe)
    whole = len(sources) == 1 and takes[0].rows == sizes[0]  # one source, all of it: in its order, as ever
    parts = []
    for s, ds, t in zip(sources, converted, takes):
        idx = draw(len(ds), t.rows, seed, s.label)
        parts.append(ds if idx is None else ds.select(idx))
    mixed = parts[0] if len(parts) == 1 else _concatenate(parts)
    if not whole:
        mixed = mixed.shuffle(seed=seed % 2**32)
    if spec.finish:
        mixed = spec.finish(mixed)
    total = sum(t.rows for t in takes)
    table = []
    for o, s, n, t in zip(opened, sources, sizes, takes):
        table.append(SourceInfo(s.label, s.path, o.kind, o.file, o.sha256, n, t.rows, t.rows / total,
                                weight=s.weight, rows=s.rows, split=s.split, asked=t.asked, repeated=t.repeated,
                                capped=t.capped, info=o.info))
    if whole:
        info = opened[0].info
        info.sources = table
        return mixed, info
    for line in _log_lines(table, why, seed):
        log(line)
    infos = [o.info for o in opened]
    pairs = dict.fromkeys((n, h) for i in infos if i.constitution_sha256
                          for n, h in zip((i.constitution_name or "?").split(", "), i.constitution_sha256.split(", ")))
    info = DataInfo(" + ".join(s.label for s in sources), "mix", _rows_hash(mixed), len(mixed),
                    constitution_name=", ".join(n for n, _ in pairs) or None,
                    constitution_sha256=", ".join(h for _, h in pairs) or None,
                    left_out=[f"{s.name}: {line}" for s in table for line in s.info.left_out],
                    sources=table, seed=seed, mix_rule=why)
    return mixed, info


def _log_lines(table: list[SourceInfo], why: str, seed: int) -> list[str]:
    lines = [f"data: a mix of {len(table)} source{'s' * (len(table) > 1)} drawn with seed {seed} ({why})"]
    for s in table:
        lines.append(f"data: {s.name}: {s.taken_text()}, {s.share:.1%} of the training rows")
        if s.capped:
            lines.append(f"data: {s.name}: its share asked for {s.asked} rows and it holds {s.available}: all of "
                         "them taken once (--oversample repeats rows instead)")
    return lines
