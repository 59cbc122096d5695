#!/usr/bin/env python3
"""Times the history store's account-list queries on one large account, with the indexes the
store had before session 9 and with the ones it has now (api/src/store.rs SCHEMA).

Usage: python3 benches/scripts/history_index_timing.py [DIR]   (default /tmp; writes ~1 GB)

Builds 2 M orders and 2 M transactions (9 in 10 on account 1; 1 order in 50,000 open) with
python's sqlite3 and the store's column layout, then runs the queries `store::paged` sends
for GET /v1/orders?status=open and GET /v1/transactions (first page, and a one-day range),
each with its COUNT, before and after swapping the indexes.
"""
import os, sqlite3, sys, time

d = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
path = os.path.join(d, "history_index_timing.sqlite")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
c = sqlite3.connect(path)
c.execute("PRAGMA journal_mode=WAL")
c.executescript("""
CREATE TABLE orders(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
  client_id TEXT NOT NULL, pair INTEGER NOT NULL, side INTEGER NOT NULL, market INTEGER NOT NULL,
  tif INTEGER NOT NULL, post_only INTEGER NOT NULL, price INTEGER, amount INTEGER,
  quote_amount INTEGER, filled INTEGER NOT NULL, filled_quote INTEGER NOT NULL,
  value_sum TEXT NOT NULL, fee INTEGER NOT NULL, status INTEGER NOT NULL, reject_reason TEXT,
  created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE UNIQUE INDEX orders_client ON orders(account, client_id);
CREATE INDEX orders_account ON orders(account, id);
CREATE TABLE transactions(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
  currency INTEGER NOT NULL, type INTEGER NOT NULL, amount INTEGER NOT NULL,
  balance_after INTEGER NOT NULL, ts_ns INTEGER NOT NULL, ref_id TEXT, ref_type TEXT,
  ref2_id TEXT, ref2_type TEXT);
CREATE INDEX tx_account ON transactions(account, id);
""")
N = 2_000_000
T0 = 1_700_000_000_000_000_000
c.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              ((i, 1 if i % 10 else 2, f"c{i}", i % 4, i % 2, 0, 0, 0, 100000 + i % 500, 1000,
                None, 0, 0, "0", 0, 0 if i % 50000 == 0 else 3, None, i, i)
               for i in range(1, N + 1)))
c.executemany("INSERT INTO transactions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
              ((i, 1 if i % 10 else 2, i % 3, i % 4, 100, 1000, T0 + i * 1000, str(i), "ORDER",
                str(i), "ORDER_EXECUTION") for i in range(1, N + 1)))
c.commit()
day = (T0 + 1_000_000_000, T0 + 1_100_000_000)
queries = [
    ("open orders page", "SELECT * FROM orders WHERE account = ? AND status IN (0, 1) "
     "ORDER BY id DESC LIMIT 100 OFFSET 0", (1,)),
    ("open orders count", "SELECT COUNT(*) FROM orders WHERE account = ? AND status IN (0, 1)", (1,)),
    ("all orders count", "SELECT COUNT(*) FROM orders WHERE account = ?", (1,)),
    ("transactions page", "SELECT * FROM transactions WHERE account = ? "
     "ORDER BY ts_ns DESC, id DESC LIMIT 100 OFFSET 0", (1,)),
    ("transactions one day", "SELECT * FROM transactions WHERE account = ? AND ts_ns >= ? "
     "AND ts_ns < ? ORDER BY ts_ns DESC, id DESC LIMIT 100", (1,) + day),
    ("all transactions count", "SELECT COUNT(*) FROM transactions WHERE account = ?", (1,)),
]


def run(tag):
    for name, sql, args in queries:
        t = time.perf_counter()
        c.execute(sql, args).fetchall()
        print(f"{tag:7} {name:24} {(time.perf_counter() - t) * 1000:9.1f} ms")


run("before")
c.executescript("""
CREATE INDEX orders_open ON orders(account, id) WHERE status IN (0, 1);
DROP INDEX tx_account;
CREATE INDEX tx_account_time ON transactions(account, ts_ns, id);
""")
run("after")
c.close()
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
