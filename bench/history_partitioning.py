"""Benchmark: does monthly partitioning of the operation table pay, for the history's pages and pruning?

Builds, in a scratch PostgreSQL database, two copies of an operation-shaped table (the columns the
history filters and orders by, and a row about as wide as patching.Operation's) with the same rows:
`--days` days of `--per-day` operations (a daily assessment of 100,000 VMs is 100,000 a day; they share
one created_at per round, as queue_operations writes them). One table is plain, the other partitioned
by month on created_at; both carry the history's indexes. It then times, side by side:

- the history's first page, a page deep in the table (a keyset cursor 80% down), a kind filter's page;
- pruning the oldest month: a set-based DELETE in batches (as services.prune_history does) against
  dropping the month's partition.

    .venv/bin/python bench/history_partitioning.py [--days 60] [--per-day 100000]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hp_pages_bench_part).
"""

import argparse
import statistics
import time

import harness
import psycopg

URL = harness.database_url("hp_pages_bench_part")

COLUMNS = """
    id bigint NOT NULL, created_at timestamptz NOT NULL, kind varchar(12) NOT NULL, status varchar(24) NOT NULL,
    started_by varchar(10) NOT NULL, subscription_id uuid NOT NULL, vm_id bigint, vm_name varchar(64) NOT NULL,
    location varchar(40) NOT NULL, error_message text NOT NULL, padding text NOT NULL
"""
INDEXES = [
    "(created_at DESC, id DESC)",
    "(kind, created_at DESC, id DESC)",
    "(status, created_at DESC, id DESC)",
    "(vm_id, created_at DESC)",
]


def build(conn, days: int, per_day: int) -> None:
    conn.execute("DROP TABLE IF EXISTS op_plain, op_parted CASCADE")
    conn.execute(f"CREATE TABLE op_plain ({COLUMNS}, PRIMARY KEY (id))")
    conn.execute(f"CREATE TABLE op_parted ({COLUMNS}, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)")
    start = conn.execute("SELECT date_trunc('month', now() - make_interval(days => %s))", [days]).fetchone()[0]
    months = conn.execute(
        "SELECT generate_series(%s::timestamptz, now() + interval '1 month', interval '1 month')", [start]
    ).fetchall()
    for (month,) in months:
        name = f"op_parted_{month:%Y%m}"
        end = month.replace(month=month.month % 12 + 1, year=month.year + (month.month == 12))
        conn.execute(
            f"CREATE TABLE {name} PARTITION OF op_parted FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
    began = time.perf_counter()
    conn.execute(
        """
        INSERT INTO op_plain
        SELECT d * %(per)s + v, now() - make_interval(days => %(days)s - d),
               CASE WHEN v %% 10 = 0 THEN 'installation' ELSE 'assessment' END,
               CASE WHEN v %% 50 = 0 THEN 'Failed' ELSE 'Succeeded' END,
               CASE WHEN v %% 1000 = 0 THEN 'user' ELSE 'platform' END,
               '00000000-0000-0000-0000-000000000001', v, 'vm' || v, 'westeurope', '', repeat('x', 200)
        FROM generate_series(0, %(days)s - 1) d, generate_series(1, %(per)s) v
        """,
        {"per": per_day, "days": days},
    )
    conn.execute("INSERT INTO op_parted SELECT * FROM op_plain")
    for n, columns in enumerate(INDEXES):
        conn.execute(f"CREATE INDEX op_plain_{n} ON op_plain {columns}")
        conn.execute(f"CREATE INDEX op_parted_{n} ON op_parted {columns}")
    conn.execute("VACUUM ANALYZE op_plain")
    conn.execute("VACUUM ANALYZE op_parted")
    print(f"built {days * per_day:,} rows twice in {time.perf_counter() - began:.0f} s", flush=True)


def timed(conn, sql: str, params=(), repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    harness.create_database(URL, drop=False)  # kept if it exists: build() replaces its tables unless --reuse
    with psycopg.connect(URL, autocommit=True) as conn:
        if not args.reuse:
            build(conn, args.days, args.per_day)
        # 80% down the rows there are: a run reusing the tables finds them without the month it pruned.
        rows = conn.execute("SELECT count(*) FROM op_plain").fetchone()[0]
        deep = conn.execute(
            "SELECT created_at, id FROM op_plain ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            [int(rows * 0.8)],
        ).fetchone()
        pages = {
            "first page": ("SELECT * FROM {t} ORDER BY created_at DESC, id DESC LIMIT 51", ()),
            "deep page (same moment)": (
                "SELECT * FROM {t} WHERE created_at = %s AND id < %s ORDER BY created_at DESC, id DESC LIMIT 51",
                deep,
            ),
            "deep page (older)": (
                "SELECT * FROM {t} WHERE created_at < %s ORDER BY created_at DESC, id DESC LIMIT 51",
                deep[:1],
            ),
            "kind=installation page": (
                "SELECT * FROM {t} WHERE kind = 'installation' ORDER BY created_at DESC, id DESC LIMIT 51",
                (),
            ),
            "status=Failed deep page": (
                "SELECT * FROM {t} WHERE status = 'Failed' AND created_at < %s "
                "ORDER BY created_at DESC, id DESC LIMIT 51",
                deep[:1],
            ),
        }
        print(f"{'query':<28}{'plain ms':>10}{'partitioned ms':>16}")
        for label, (sql, params) in pages.items():
            plain = timed(conn, sql.format(t="op_plain"), params)
            parted = timed(conn, sql.format(t="op_parted"), params)
            print(f"{label:<28}{plain * 1000:>10.2f}{parted * 1000:>16.2f}")
        oldest = conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'op_parted'::regclass "
            "ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
        bounds = conn.execute(f"SELECT min(created_at), max(created_at), count(*) FROM {oldest}").fetchone()
        began = time.perf_counter()
        deleted = 0
        while True:  # as prune_history: batches of 10,000 by id, set-based
            n = conn.execute(
                "DELETE FROM op_plain WHERE id IN (SELECT id FROM op_plain WHERE created_at <= %s LIMIT 10000)",
                [bounds[1]],
            ).rowcount
            deleted += n
            if n < 10000:
                break
        plain = time.perf_counter() - began
        began = time.perf_counter()
        conn.execute(f"DROP TABLE {oldest}")
        parted = time.perf_counter() - began
        print(f"{'prune oldest month':<28}{plain * 1000:>10.0f}{parted * 1000:>16.0f}   ({deleted:,} rows)")


if __name__ == "__main__":
    main()
