"""Reading a manifest into a :class:`Table` (checked cells, labels, splits), and the map-style split over it.

Rows are numbered as a user finds them: CSV and Parquet by 1-based data row (the header is not a row), JSONL by
line. Every error names the manifest, that number and, for media, the file.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import mmcore

from .decode import READERS, MediaError

PARQUET_INSTALL = 'pip install "mmcore-media[parquet]"'
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
SPLITS = ("train", "val", "test")
MAX_LISTED = 5
"""How many problems a build error lists before giving the count."""

log = logging.getLogger("mmcore_media.manifest")


class BadMediaError(MediaError, mmcore.DataError):
    """A manifest cell that cannot be decoded: the message names the manifest, its row and the file.

    Constructible from the message alone, so torch's DataLoader re-raises it with its type from a worker."""

    def __init__(self, message: str, source: str = "", where: str = ""):
        ValueError.__init__(self, message)
        self.source, self.where = source, where


def _listed(problems: list) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    return shown + (f"; ... ({len(problems)} in all)" if len(problems) > MAX_LISTED else "")


# -- reading the table --------------------------------------------------------------------------------------------


def read_records(path: Path):
    """``(unit, header, records)``: ``unit`` is ``"row"`` or ``"line"``, ``header`` the column names in order,
    ``records`` a list of ``(number, {column: value})``."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise mmcore.ConfigError("path", f"{path}: unknown manifest format {path.suffix!r}; use .csv, .jsonl or "
                                         f".parquet")
    if not path.is_file():
        raise mmcore.ConfigError("path", f"no such manifest: {path}")
    return {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt](path)


def _read_csv(path: Path):
    records = []
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        try:
            header = next(reader, None)
            if not header:
                raise mmcore.ConfigError("path", f"{path}: empty manifest (no header row)")
            for cells in reader:
                if not cells:
                    continue  # a blank line
                number = len(records) + 1
                if len(cells) != len(header):
                    raise mmcore.ConfigError("path", f"{path} row {number}: {len(cells)} fields, the header has "
                                                     f"{len(header)}")
                records.append((number, dict(zip(header, cells))))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise mmcore.ConfigError("path", f"{path} row {len(records) + 1}: cannot read ({exc})") from None
    _check_header(path, header)
    return "row", header, records


def _read_jsonl(path: Path):
    header, records = {}, []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise mmcore.ConfigError("path", f"{path} line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise mmcore.ConfigError("path", f"{path} line {number}: expected a JSON object, got "
                                                 f"{type(record).__name__}")
            header.update(dict.fromkeys(record))
            records.append((number, record))
    return "line", list(header), records


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise mmcore.ConfigError("path", f"reading {path} (Parquet) needs pyarrow: {PARQUET_INSTALL}") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise mmcore.ConfigError("path", f"{path}: cannot read the Parquet file ({exc})") from None
    header = list(table.column_names)
    _check_header(path, header)
    return "row", header, list(enumerate(table.to_pylist(), 1))


def _check_header(path: Path, header: list) -> None:
    seen = set()
    for column in header:
        if column in seen:
            raise mmcore.ConfigError("path", f"{path}: column {column!r} appears twice in the header")
        seen.add(column)


def _blank(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


# -- labels and splits --------------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")


def _as_int(value):
    """The integer a label cell holds, or None when it is a name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return None


def label_indices(values: list, class_names, where) -> tuple:
    """``(indices, class_names)`` from the label cells (names or integers). ``where(k)`` names record ``k``.

    With ``class_names``, a cell is a class name or an index into them. Without, integer cells are indices
    (names ``"0".."K-1"``) and name cells are indexed in sorted order."""
    if class_names:
        names = tuple(str(c) for c in class_names)
        if len(set(names)) != len(names):
            raise mmcore.ConfigError("class_names", "each class name once")
        index = {name: k for k, name in enumerate(names)}
        out = []
        for k, value in enumerate(values):
            text = str(value).strip()
            number = _as_int(value)
            if text in index:
                out.append(index[text])
            elif number is not None and 0 <= number < len(names):
                out.append(number)
            else:
                raise mmcore.ConfigError("label", f"{where(k)}: label {value!r} is not one of class_names "
                                                  f"({', '.join(names)}) nor an index into them")
        return out, names
    numbers = [_as_int(v) for v in values]
    if all(n is not None for n in numbers):
        negative = [k for k, n in enumerate(numbers) if n < 0]
        if negative:
            raise mmcore.ConfigError("label", f"{where(negative[0])}: a label index must be >= 0, got "
                                              f"{numbers[negative[0]]}")
        return numbers, tuple(str(k) for k in range(max(numbers) + 1))
    names = tuple(sorted({str(v).strip() for v in values}))
    index = {name: k for k, name in enumerate(names)}
    return [index[str(v).strip()] for v in values], names


# -- the table ----------------------------------------------------------------------------------------------------


class Table:
    """The checked manifest, column-wise (what every split shares).

    source: the manifest path as given; unit: ``"row"``/``"line"``; kinds: modality -> kind (recipe order);
    columns: modality -> column; cells: modality -> per-record value (an absolute file path, a stripped text, or
    None when absent); numbers: per-record row/line number; labels: per-record class index, or None;
    class_names: tuple; split_values: per-record ``"train"|"val"|"test"``, or None; dropped: per-record count of
    cells dropped at read (empty texts, with ``on_bad_media = "skip"``)."""

    def __init__(self, source, unit, kinds, columns, cells, numbers, labels, class_names, split_values, dropped):
        self.source, self.unit, self.kinds, self.columns = source, unit, kinds, columns
        self.cells, self.numbers, self.labels, self.class_names = cells, numbers, labels, class_names
        self.split_values, self.dropped = split_values, dropped

    def where(self, record: int) -> str:
        return f"{self.source} {self.unit} {self.numbers[record]}"

    def split_rows(self, val_fraction: float, test_fraction: float, seed: int) -> dict:
        """split -> record indices: the split column's, else the seeded stratified split. Every split non-empty."""
        if self.split_values is not None:
            rows = {name: [r for r, s in enumerate(self.split_values) if s == name] for name in SPLITS}
            empty = [name for name in SPLITS if not rows[name]]
            if empty:
                raise mmcore.ConfigError("split", f"{self.source}: no row has split = {empty[0]!r} (each of train, "
                                                  f"val, test needs rows)")
            return rows
        split = mmcore.stratified_split(self.labels if self.labels is not None else [0] * len(self.numbers),
                                        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        rows = {name: split[name].tolist() for name in SPLITS}
        empty = [name for name in SPLITS if not rows[name]]
        if empty:
            field = {"train": "test_fraction", "val": "val_fraction", "test": "test_fraction"}[empty[0]]
            raise mmcore.ConfigError(field, f"{self.source}: {len(self.numbers)} rows leave the {empty[0]} split "
                                            f"empty with val_fraction = {val_fraction}, test_fraction = "
                                            f"{test_fraction}")
        return rows


def read_manifest(config, wanted: tuple, modality_kinds) -> Table:
    """Read and check the manifest of a :class:`~mmcore_media.manifest.ManifestConfig`; ``modality_kinds(config,
    wanted, header)`` says which modalities to read. Every referenced file is checked to exist."""
    path = Path(config.path)
    unit, header, records = read_records(path)
    source = str(config.path)
    if not records:
        raise mmcore.ConfigError("path", f"{source}: the manifest has no rows")
    kinds = modality_kinds(config, wanted, header)
    columns = {m: config.columns.get(m, m) for m in kinds}
    for m, column in columns.items():
        if column not in header:
            field = "columns" if m in config.columns else "modalities"
            raise mmcore.ConfigError(field, f"{source} has no column {column!r} for modality {m!r}; its columns: "
                                            f"{', '.join(header)}")
    label_column = _optional_column(config.label, "label", header, source)
    split_column = _optional_column(config.split, "split", header, source)
    if config.class_names and label_column is None:
        raise mmcore.ConfigError("class_names", f"{source} has no label column {config.label or 'label'!r}")

    base = path.resolve().parent
    numbers = [number for number, _ in records]
    cells = {m: [] for m in kinds}
    dropped = [0] * len(records)
    missing, empty_texts, label_cells, split_values = [], [], [], []
    for k, (number, record) in enumerate(records):
        where = f"{source} {unit} {number}"
        for m, kind in kinds.items():
            value = record.get(columns[m])
            if _blank(value):
                cells[m].append(None)
            elif kind == "text":
                text = value if isinstance(value, str) else str(value)
                if text.strip():
                    cells[m].append(text.strip())
                else:
                    empty_texts.append(f"{where}: {m} (column {columns[m]!r}): empty text")
                    cells[m].append(None)
                    dropped[k] += 1
            else:
                if not isinstance(value, str):
                    raise mmcore.ConfigError("path", f"{where}: {m} (column {columns[m]!r}) must be a file path, "
                                                     f"got {type(value).__name__} {value!r}")
                file = base / value.strip()  # an absolute cell stays absolute
                if not file.is_file():
                    missing.append(f"{unit} {number} {m} {value.strip()}")
                cells[m].append(str(file))
        if label_column is not None:
            value = record.get(label_column)
            if _blank(value) or (isinstance(value, str) and not value.strip()):
                raise mmcore.ConfigError("label", f"{where}: empty label (column {label_column!r})")
            label_cells.append(value)
        if split_column is not None:
            value = str(record.get(split_column) or "").strip().lower()
            if value not in SPLITS:
                raise mmcore.ConfigError("split", f"{where}: split must be train, val or test, got "
                                                  f"{record.get(split_column)!r} (column {split_column!r})")
            split_values.append(value)

    if missing:
        raise mmcore.ConfigError("path", f"{source}: {len(missing)} referenced file"
                                         f"{'s are' if len(missing) > 1 else ' is'} missing (paths relative to "
                                         f"{base}): {_listed(missing)}")
    if empty_texts and config.on_bad_media == "error":
        raise mmcore.ConfigError("path", f"{_listed(empty_texts)} (on_bad_media = \"skip\" drops such cells)")
    for problem in empty_texts:
        log.warning("skipped %s", problem)

    labels, class_names = None, ()
    if label_column is not None:
        labels, class_names = label_indices(label_cells, config.class_names,
                                            lambda k: f"{source} {unit} {numbers[k]}")
    return Table(source, unit, kinds, columns, cells, numbers, labels, class_names,
                 split_values if split_column is not None else None, dropped)


def _optional_column(name: str, default: str, header: list, source: str):
    """The column ``name`` if the manifest has it; None when it is ``""`` or the default name and absent."""
    if not name:
        return None
    if name in header:
        return name
    if name == default:
        return None
    raise mmcore.ConfigError(default, f"{source} has no {default} column {name!r}; its columns: {', '.join(header)}")


# -- the split ----------------------------------------------------------------------------------------------------


class ManifestSplit:
    """One split of a manifest: item ``i`` is record ``indices[i]``, its media decoded on access.

    Decoding runs here, so in the DataLoader workers. ``on_bad_media``: ``"error"`` raises
    :class:`BadMediaError` (manifest, row, file); ``"skip"`` marks the cell absent and counts it in the item's
    ``"skipped"`` (present in every item of a ``"skip"`` split, 0 for most)."""

    def __init__(self, table: Table, indices, on_bad_media: str = "error"):
        self.table, self.indices, self.on_bad_media = table, list(indices), on_bad_media

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        table = self.table
        record = self.indices[index]
        inputs, present = {}, {}
        skipped = table.dropped[record]
        for m, kind in table.kinds.items():
            value = table.cells[m][record]
            if value is not None and kind != "text":
                try:
                    value = READERS[kind](value)
                except MediaError as exc:
                    where = table.where(record)
                    if self.on_bad_media == "error":
                        raise BadMediaError(f"{where}: {m}: {exc}", exc.source, where) from None
                    log.warning("skipped %s: %s: %s", where, m, exc)
                    value, skipped = None, skipped + 1
            inputs[m], present[m] = value, value is not None
        item = {"inputs": inputs, "present": present, "id": table.numbers[record]}
        if table.labels is not None:
            item["label"] = table.labels[record]
        if self.on_bad_media == "skip":
            item["skipped"] = skipped
        return item
