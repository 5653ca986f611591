"""Reads every exported file with pandas, polars and pyarrow, and converts depth + trades with
hftbacktest's Tardis converter; prints what it read as JSON for ingest/tests/export.rs.
Exit 3 when a library is missing (the test skips visibly outside CI)."""

import glob
import json
import os
import sys
from decimal import Decimal

try:
    import pandas as pd
    import polars as pl
    import pyarrow.csv as pacsv
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


def main(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.csv.gz")))
    report = {"files": {os.path.basename(p): read(p) for p in files}, "hftbacktest": {}}
    for depth in (p for p in files if "_incremental_book_L2_" in p):
        trades = depth.replace("_incremental_book_L2_", "_trades_")
        if os.path.exists(trades):
            events = tardis.convert([trades, depth], snapshot_mode="process")
            report["hftbacktest"][os.path.basename(depth)] = len(events)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
