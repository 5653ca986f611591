"""ingest's CPU samples by task, from `perf script` (call graphs) on standard input.

A sample belongs to the task nearest the root of its stack: a table writer, a database
connection, a symbol task, the feed, or the runtime itself (parking, epoll, timers). Within a
task, the part is the first that matches anywhere in the stack. Used by bench/profile.sh; the
figures in bench/REPORT.md §10 come from it.
"""

import collections
import sys

TASKS = [
    ("database connections (tokio-postgres I/O)", "tokio_postgres::connection::Connection"),
    ("table writers", "ingest::writer::"),
    ("symbol tasks", "ingest::symbol::"),
    ("feed (WebSocket → route)", "ingest::feed::"),
    ("metrics / HTTP", "hyper::"),
]
PARTS = {
    "table writers": [
        ("COPY row encoding", ["ingest::row::Row::encode", "ingest::copy::"]),
        ("NOTIFY payloads", ["ingest::notify::"]),
        ("statements, queue, rest", [""]),
    ],
    "symbol tasks": [
        ("book apply (snapshot + diff)", ["book::sync::"]),
        ("top-N features, book_top", ["book::features", "write_top", "book::window"]),
        ("rows to writer queues", ["ingest::writer::Writer", "mpsc"]),
        ("select!, timers, rest", [""]),
    ],
    "feed (WebSocket → route)": [
        ("decode (sonic-rs, e8)", ["ingest::decode::", "binance::e8wire", "sonic_rs"]),
        ("WebSocket frames, TCP read", ["tungstenite", "recvmsg", "recvfrom", "sys_read"]),
        ("route, dedup, queues", [""]),
    ],
}


def classify(frames):
    task = next(
        (name for f in reversed(frames) for name, pat in TASKS if pat in f),
        None,
    )
    text = "\n".join(frames)
    if task is None:
        task = "runtime: park/unpark, epoll, timers" if "tokio::runtime" in text else "other"
    part = next((p for p, pats in PARTS.get(task, []) if any(x in text for x in pats)), None)
    return task, part, bool(frames) and "[kernel" in frames[0]


def main():
    tasks, parts, kernel = collections.Counter(), collections.Counter(), collections.Counter()
    total, block = 0, []

    def flush():
        nonlocal total
        if block:
            task, part, in_kernel = classify(block)
            total += 1
            tasks[task] += 1
            if part:
                parts[(task, part)] += 1
            if in_kernel:
                kernel[task] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            block = []
        elif line.startswith((" ", "\t")):
            fields = line.strip().split(" ", 1)
            block.append(fields[-1])
    flush()
    if total == 0:
        sys.exit("no samples")
    for task, n in tasks.most_common():
        print(f"{100 * n / total:5.1f} %  {task}  (in the kernel: {100 * kernel[task] / n:.0f} %)")
        for (t, part), m in parts.most_common():
            if t == task:
                print(f"         {100 * m / total:5.1f} %  {part}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
