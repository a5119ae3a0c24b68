"""Behaviour fingerprints of a results tree: one line per table, to compare two versions of the library.

Usage::

    python tools/fingerprints.py results > before.json          # on the old code's results
    python tools/fingerprints.py results --compare before.json   # after a change: lists what differs

Per table (``.parquet`` / ``.csv`` under the tree): the sha256 of its bytes, its shape and columns, and a
numeric fingerprint that survives a rewrite of the same numbers: per column, the sum and the sum of absolute
values of numeric columns (rounded to 9 significant digits) or the sha256 of the values of other columns, in
row order. Two tables "match" when shape, columns and every column fingerprint agree; a byte-level mismatch
of matching tables (a different parquet writer, say) is reported separately.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _sig(x: float, digits: int = 9) -> float | None:
    if x is None or not math.isfinite(x):
        return None if x is None or math.isnan(x) else x
    return float(f"{x:.{digits}g}")


def _text(x: object) -> str:
    if isinstance(x, list | tuple | np.ndarray):
        return "[" + ",".join(_text(v) for v in list(x)) + "]"
    return "<NA>" if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA else str(x)


def column_fingerprint(s: pd.Series) -> dict:
    if pd.api.types.is_bool_dtype(s):
        return {"true": int(s.fillna(False).sum()), "na": int(s.isna().sum())}
    if pd.api.types.is_numeric_dtype(s):
        v = pd.to_numeric(s, errors="coerce").astype(float)
        return {
            "sum": _sig(float(np.nansum(v))),
            "abs": _sig(float(np.nansum(np.abs(v)))),
            "na": int(v.isna().sum()),
        }
    text = "\x1f".join(_text(x) for x in s.tolist())
    return {"sha": hashlib.sha256(text.encode()).hexdigest()[:16]}


def table_fingerprint(path: Path) -> dict:
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "shape": list(df.shape),
        "columns": [str(c) for c in df.columns],
        "values": {str(c): column_fingerprint(df[c]) for c in df.columns},
    }


def tree_fingerprints(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in (".parquet", ".csv") and "parts" not in path.parts and "cells" not in path.parts:
            out[str(path.relative_to(root))] = table_fingerprint(path)
    return out


def compare(before: dict, after: dict) -> list[str]:
    lines = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            lines.append(f"{name}: {'new' if a is None else 'missing'}")
            continue
        if a["shape"] != b["shape"] or a["columns"] != b["columns"]:
            lines.append(f"{name}: shape/columns {a['shape']} {a['columns']} -> {b['shape']} {b['columns']}")
            continue
        diff = [c for c in a["columns"] if a["values"][c] != b["values"][c]]
        if diff:
            detail = "; ".join(f"{c}: {a['values'][c]} -> {b['values'][c]}" for c in diff[:6])
            lines.append(f"{name}: values differ in {len(diff)} column(s): {detail}")
        elif a["sha256"] != b["sha256"]:
            lines.append(f"{name}: same values, different bytes")
        else:
            lines.append(f"{name}: identical")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--compare", type=Path, help="fingerprints written earlier (JSON)")
    args = ap.parse_args()
    now = tree_fingerprints(args.root)
    if args.compare:
        print("\n".join(compare(json.loads(args.compare.read_text()), now)))
    else:
        json.dump(now, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
