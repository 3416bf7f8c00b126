"""products_agg is refreshed on its timer and after loads, in one transaction:
a reader never sees it empty or partly built."""
import threading
import time

import psycopg2

from conftest import generate, query
from model import Model


def test_readers_never_see_a_partial_aggregate(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 40000, 12)
    d = daemon(workers=2, chunk_size="16k", interval=0.1).start()
    seen, stop = [], threading.Event()

    def reader():
        c = psycopg2.connect(d.conninfo)
        c.autocommit = True
        cur = c.cursor()
        while not stop.is_set():
            cur.execute("SELECT count(*), coalesce(sum(no_of_products), 0) FROM products_agg")
            n, total = cur.fetchone()
            cur.execute("SELECT count(*) FROM products")
            seen.append((n, int(total), cur.fetchone()[0]))
        c.close()

    t = threading.Thread(target=reader)
    t.start()
    try:
        d.drop(src)
    finally:
        stop.set()
        t.join()
    assert "aggregate refresh failed" not in d.log_text()
    totals = [s[1] for s in seen]
    distinct_totals = sorted(set(totals))
    assert len(distinct_totals) >= 5, distinct_totals     # it really refreshed during the load
    first = next(i for i, s in enumerate(totals) if s > 0)
    assert all(s > 0 for s in totals[first:])            # never empty again
    assert totals[first:] == sorted(totals[first:])      # ingest only adds: never shrinks
    assert all(total <= products for _, total, products in seen)
    m = Model()
    m.ingest(src)
    assert d.aggregate() == m.aggregate()


def test_interval_refresh_picks_up_outside_changes(daemon, tmp_path):
    d = daemon(interval=0.3).start()
    query(d.conninfo, "INSERT INTO products (sku, name) VALUES ('x', 'Outside Writer')")
    deadline = time.time() + 10
    while d.aggregate() != {"Outside Writer": 1}:
        assert time.time() < deadline
        time.sleep(0.1)


def test_after_load_refresh_without_timer(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 2000, 8)
    d = daemon(interval=0, after_load="true").start()
    d.drop(src)                      # --wait returns only once the refresh is committed
    m = Model()
    m.ingest(src)
    assert d.aggregate() == m.aggregate()
    [f] = d.status()
    assert f["aggregated_at"] is not None
