"""Reads every exported file with pandas, polars and pyarrow, and converts depth + trades with
hftbacktest's Tardis converter; compares every Parquet file with its CSV twin value by value;
prints what it read as JSON for ingest/tests/export.rs.
Exit 3 when a library is missing (the test skips visibly outside CI)."""

import glob
import json
import os
import sys
from decimal import Decimal

try:
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from hftbacktest.data.utils import tardis
except ImportError as e:
    print(f"python: {e} (pip install pandas polars pyarrow hftbacktest)", file=sys.stderr)
    sys.exit(3)

DECIMALS = ("price", "amount", "bid_price", "ask_price", "mark_price", "index_price")


def exact_sum(values):
    total = sum((Decimal(v) for v in values if v != ""), Decimal(0))
    return format(total.normalize(), "f") if total else "0"


def read(path):
    df = pd.read_csv(path)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    out = {
        "pandas_rows": len(df),
        "polars_rows": pl.read_csv(path).height,
        "pyarrow_rows": pacsv.read_csv(path).num_rows,
        "columns": list(df.columns),
        "first_timestamp": int(df["timestamp"].min()) if len(df) else None,
        "last_timestamp": int(df["timestamp"].max()) if len(df) else None,
    }
    for column in DECIMALS:
        if column in text.columns:
            out[f"sum_{column}"] = exact_sum(text[column])
    return out


def csv_value(text, arrow_type):
    """A CSV field as the Parquet column's Python value."""
    if text == "":
        return None
    if str(arrow_type).startswith("decimal"):
        return Decimal(text)
    if str(arrow_type).startswith("timestamp") or str(arrow_type) == "int64":
        return int(text)
    if str(arrow_type) == "bool":
        return text == "true"
    return text


def parquet_column(table, field):
    """A Parquet column as Python values; timestamps as microseconds since the epoch."""
    column = table.column(field.name)
    if str(field.type).startswith("timestamp"):
        column = column.cast(pa.int64())
    return column.to_pylist()


def read_parquet(path):
    table = pq.read_table(path)
    twin = path[: -len(".parquet")] + ".csv.gz"
    text = pd.read_csv(twin, dtype=str, keep_default_na=False)
    mismatches = 0
    if list(text.columns) != table.column_names or len(text) != table.num_rows:
        mismatches += 1
    else:
        for field in table.schema:
            got = parquet_column(table, field)
            want = [csv_value(v, field.type) for v in text[field.name]]
            mismatches += sum(1 for a, b in zip(got, want) if a != b)
    meta = pq.read_metadata(path).metadata or {}
    return {
        "pandas_rows": len(pd.read_parquet(path)),
        "polars_rows": pl.read_parquet(path).height,
        "pyarrow_rows": table.num_rows,
        "columns": table.column_names,
        "types": [str(f.type) for f in table.schema],
        "values_unequal_to_csv": mismatches,
        "gaps": json.loads(meta.get(b"depthbook.gaps", b"null")),
    }


def main(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.csv.gz")))
    report = {"files": {os.path.basename(p): read(p) for p in files}, "hftbacktest": {}}
    report["parquet"] = {
        os.path.basename(p): read_parquet(p)
        for p in sorted(glob.glob(os.path.join(directory, "*.parquet")))
    }
    for depth in (p for p in files if "_incremental_book_L2_" in p):
        trades = depth.replace("_incremental_book_L2_", "_trades_")
        if os.path.exists(trades):
            events = tardis.convert([trades, depth], snapshot_mode="process")
            report["hftbacktest"][os.path.basename(depth)] = len(events)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
