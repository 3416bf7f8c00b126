"""products_agg is refreshed on its timer and after loads, in one transaction:
a reader never sees it empty or partly built."""
import threading
import time

import psycopg2
import pytest

from conftest import generate, query
from model import Model, write_csv


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


def test_after_load_refresh_folds_the_chunks_deltas(daemon, tmp_path):
    """Small loads onto a big table: products_agg follows from the per-name
    deltas the chunks recorded (inserts, renames by ingest and by update
    files, names that disappear), not from a recount; no timer."""
    a = generate(tmp_path / "a.csv", 6000, 31)
    d = daemon(workers=2, chunk_size="16k", interval=0, after_load="true").start(debug=True)
    d.drop(a)
    m = Model()
    m.ingest(a)
    assert d.aggregate() == m.aggregate()
    query(d.conninfo, "ANALYZE products")    # the table's size is now known: deltas are cheaper
    skus = sorted(k[0] for k in m.products)
    lone = [n for n, c in m.aggregate().items() if c == 1][:5]
    lone_skus = [s for s, (sku, name, _) in m.products.items() if name in lone]
    b_rows = [("renamed %d" % i, sku, "Renamed Person%d" % (i % 9)) for i, sku in enumerate(skus[:60])]
    b_rows += [("renamed away", k[0], "Somebody Else") for k in lone_skus]     # these names vanish
    b_rows += [("new", "zz-fold-%d" % i, "Brand New%d" % (i % 4)) for i in range(30)]
    b = str(tmp_path / "b.csv")
    write_csv(b, ["description", "sku", "name"], b_rows)
    d.drop(b)
    m.ingest(b)
    assert d.aggregate() == m.aggregate()
    u = str(tmp_path / "u.csv")
    write_csv(u, ["sku", "name"], [(sku, "Updated Name%d" % (i % 3)) for i, sku in enumerate(skus[100:140])])
    d.drop(u, kind="update")
    m.update(u)
    assert d.aggregate() == m.aggregate()
    assert d.products() == m.table()
    log = d.log_text()
    assert log.count("products_agg updated from the loads' deltas") >= 2, log[-3000:]
    assert query(d.conninfo, "SELECT count(*) FROM ingest.agg_delta")[0][0] == 0


PRIMARY_KEY = ("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
               "WHERE conrelid = 'products_agg'::regclass AND contype = 'p'")


def test_first_build_rebuilds_the_primary_key_as_it_was(daemon, tmp_path):
    """The first build into an empty products_agg drops the primary key and
    adds it again after the insert: same name, same definition, enforced."""
    src = generate(tmp_path / "p.csv", 3000, 41)
    d = daemon(interval=0, after_load="true").start(debug=True)
    before = query(d.conninfo, PRIMARY_KEY)
    d.drop(src)
    m = Model()
    m.ingest(src)
    assert d.aggregate() == m.aggregate()
    assert query(d.conninfo, PRIMARY_KEY) == before == [("products_agg_pkey", "PRIMARY KEY (name)")]
    name = next(iter(m.aggregate()))
    try:
        query(d.conninfo, "INSERT INTO products_agg VALUES (%s, 1)", (name,))
        raise AssertionError("the rebuilt key did not refuse a duplicate name")
    except psycopg2.errors.UniqueViolation:
        pass


def test_first_build_keeps_the_key_when_a_foreign_key_needs_it(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 3000, 42)
    d = daemon(interval=0, after_load="true").start()
    query(d.conninfo, "CREATE TABLE watch (name text COLLATE \"C\" REFERENCES products_agg (name))")
    d.drop(src)
    m = Model()
    m.ingest(src)
    assert d.aggregate() == m.aggregate()
    assert query(d.conninfo, PRIMARY_KEY) == [("products_agg_pkey", "PRIMARY KEY (name)")]
    assert len(query(d.conninfo, "SELECT 1 FROM pg_constraint WHERE confrelid = 'products_agg'::regclass")) == 1


def test_first_build_gives_up_the_key_rebuild_behind_a_long_reader(daemon, tmp_path):
    """A reader's open transaction holds products_agg. Waiting for it with an
    exclusive lock request would queue every other reader too: the first build
    waits at most 1 s for the lock, then inserts with the key in place. The load
    completes while the reader still holds its lock."""
    src = generate(tmp_path / "p.csv", 3000, 43)
    d = daemon(interval=0, after_load="true").start()
    holder = psycopg2.connect(d.conninfo)
    try:
        holder.cursor().execute("SELECT count(*) FROM products_agg")     # AccessShareLock until rollback
        t0 = time.monotonic()
        d.drop(src)                      # returns once products_agg is committed
        waited = time.monotonic() - t0
        m = Model()
        m.ingest(src)
        assert d.aggregate() == m.aggregate()
    finally:
        holder.rollback()
        holder.close()
    assert waited >= 1.0, waited         # it did ask for the lock, for its lock_timeout
    assert query(d.conninfo, PRIMARY_KEY) == [("products_agg_pkey", "PRIMARY KEY (name)")]


@pytest.mark.parametrize("count_memory, way", [
    (None, "names counted here"),                    # the default, 32M
    ("0", "names counted by the server"),
    ("128k", "names counted by the server, they did not fit in aggregate.count_memory"),
])
def test_first_build_counts_names_here_or_in_the_server(daemon, tmp_path, count_memory, way):
    """products_agg built from empty, three ways, equal to the model: names
    counted in ingestd; by PostgreSQL; and counted in ingestd until they
    outgrow aggregate.count_memory, then by PostgreSQL. 3000 distinct names
    of 40 bytes need ~250 kB here, while 3000 rows pass the up-front estimate
    of 128k (4096 rows), so the last case starts counting and gives up."""
    rows = [("d%d" % i, "sku-%05d" % i, "A Long Product Name Number %013d" % (i * 7919))
            for i in range(3000)]
    rows += [("again", "", rows[i][2]) for i in range(400)]     # names that repeat
    rows = [(d, "sku-%05d" % i, n) for i, (d, _, n) in enumerate(rows)]
    src = str(tmp_path / "p.csv")
    write_csv(src, ["description", "sku", "name"], rows)
    d = daemon(interval=0, after_load="true", count_memory=count_memory).start(debug=True)
    d.drop(src)
    m = Model()
    m.ingest(src)
    assert d.aggregate() == m.aggregate()
    assert "products_agg first build: %s\n" % way in d.log_text()
    assert query(d.conninfo, PRIMARY_KEY) == [("products_agg_pkey", "PRIMARY KEY (name)")]


def test_first_build_with_a_case_blind_collation_counts_in_the_server(daemon, tmp_path):
    """Names of a nondeterministic collation are equal without being the same
    bytes: only the server may group them. products_agg then has what GROUP
    BY gives: one row for 'Lamp'/'LAMP'/'lamp'."""
    d = daemon(interval=0, after_load="true").start(debug=True)
    query(d.conninfo, "CREATE COLLATION blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    query(d.conninfo, "ALTER TABLE products ALTER COLUMN name TYPE text COLLATE blind")
    query(d.conninfo, "ALTER TABLE products_agg ALTER COLUMN name TYPE text COLLATE blind")
    src = str(tmp_path / "p.csv")
    write_csv(src, ["sku", "name"], [("a", "Lamp"), ("b", "LAMP"), ("c", "lamp"), ("d", "Chair")])
    d.drop(src)
    agg = {n.lower(): c for n, c in d.aggregate().items()}
    assert agg == {"lamp": 3, "chair": 1}
    assert "products_agg first build: names counted by the server\n" in d.log_text()
