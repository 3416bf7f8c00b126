"""A first load into an empty products defers its primary key (defer_key):
rows go straight into the bare table and the key is built once, afterwards.
Each test compares the tables with the sequential Python model and checks
that the key is back."""
import re
import time

import psycopg2

from conftest import apply_paths_taken, generate, path_kind, primary_key, query
from model import Model, write_csv

BOTH_LAYOUTS = True   # products as one table and partitioned (conftest.LAYOUTS)


def check(d, model, key="sku"):
    assert d.products() == model.table()
    assert d.aggregate() == model.aggregate()
    assert primary_key(d) == key
    assert query(d.conninfo, "SELECT count(*) FROM ingest.files WHERE deferred_key IS NOT NULL")[0][0] == 0
    assert query(d.conninfo, "SELECT count(*) FROM ingest.deferred_rows")[0][0] == 0
    for f in d.status():
        assert f["rows_loaded"] + f["rows_rejected"] + f["rows_superseded"] == f["data_rows"], f


def fnv1a(data, bits):
    h, prime, mask = (14695981039346656037, 1099511628211, (1 << 64) - 1) if bits == 64 else \
        (2166136261, 16777619, (1 << 32) - 1)
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


def wait_file(d, state, timeout=120):
    deadline = time.time() + timeout
    while [f["state"] for f in d.status()][-1:] != [state]:
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.1)


def test_first_load_defers_the_key_and_later_files_use_it(daemon, tmp_path):
    first = generate(tmp_path / "first.csv", 20000, 61)
    second = generate(tmp_path / "second.csv", 8000, 62)
    d = daemon(workers=2, chunk_size="256k").start(debug=True)
    d.drop(first)
    m = Model()
    m.ingest(first)
    check(d, m)
    log = d.log_text()
    chunks = d.status()[0]["chunks"]
    assert chunks >= 6 and apply_paths_taken(d) == ["deferred"] * chunks, apply_paths_taken(d)
    assert "products is empty: its primary key is built once, after the rows" in log
    assert "products: primary key built in" in log
    d.drop(second)                                  # products is not empty: the key stays
    m.ingest(second)
    check(d, m)
    log = d.log_text()
    first_id, second_id = (f["id"] for f in d.status())
    assert log.count("products is empty") == 1 and apply_paths_taken(d, first_id) == ["deferred"] * chunks
    assert {path_kind(p) for p in apply_paths_taken(d, second_id)} == {"batches"}


def test_composite_key_is_deferred_and_built(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 12000, 63)
    d = daemon(workers=2, chunk_size="128k", key="sku,name").start(debug=True)
    d.drop(src)
    m = Model("sku,name")
    m.ingest(src)
    check(d, m, key="sku,name")
    assert "deferred" in apply_paths_taken(d)


def test_busy_products_keeps_the_key(daemon, tmp_path):
    """A reader holding products keeps its lock: the decision gives up after a
    second and the file loads with the key."""
    src = generate(tmp_path / "p.csv", 3000, 64)
    d = daemon(workers=2).start(debug=True)
    reader = psycopg2.connect(d.conninfo)
    reader.cursor().execute("SELECT count(*) FROM products")   # its transaction stays open
    d.drop(src)
    reader.close()
    m = Model()
    m.ingest(src)
    check(d, m)
    kinds = {path_kind(p) for p in apply_paths_taken(d)}
    assert kinds == {"batches"}, kinds


def lane_zero_file(path, description):
    """30,000 skus that all hash to lane 0 of 2, then 500 of them again with
    another name: the chunk's lookahead, sized for half of the rows, fills
    up, and the keys that found no room cannot tell whether they repeat."""
    rows, i = [], 0
    while len(rows) < 30000:
        sku = "lane-zero-%d" % i
        i += 1
        if fnv1a(sku.encode(), 32) % 2 == 0:
            rows.append((sku, "Name %d" % (i % 977), description + str(i)))
    rows += [(sku, name + " Again", desc) for sku, name, desc in rows[:500]]
    write_csv(path, ["sku", "name", "description"], rows)
    return str(path)


def test_keys_without_room_in_the_lookahead_wait_for_the_key(daemon, tmp_path):
    src = lane_zero_file(tmp_path / "skewed.csv", "d")
    d = daemon(workers=2, chunk_size="64M").start(debug=True)
    d.drop(src)
    m = Model()
    m.ingest(src)
    check(d, m)
    deferred = [int(n) for n in re.findall(r"; deferred \(\d+ pieces, \d+ copied as new\), (\d+) rows deferred", d.log_text())]
    assert len(deferred) == 2 and max(deferred) > 1000, d.log_text()[-3000:]


def test_too_many_uncertain_rows_build_the_key_in_their_chunk(daemon, tmp_path):
    """The same with long rows: the rows without room outgrow the 1 MiB kept
    for them, so the chunk rolls its copy back, builds the key in its own
    transaction and applies its rows the ordinary way."""
    src = lane_zero_file(tmp_path / "skewed.csv", "long description " * 20)
    d = daemon(workers=2, chunk_size="64M").start(debug=True)
    d.drop(src)
    m = Model()
    m.ingest(src)
    check(d, m)
    assert any(p.startswith("key+batches") for p in apply_paths_taken(d)), apply_paths_taken(d)


def colliding_skus():
    """Two skus whose FNV-1a 64 share the lookahead's tag (the top 24 bits) and
    their first slot in a table of 2048 (the low 11 bits): a small chunk's
    table takes them for one key."""
    seen = {}
    i = 0
    while True:
        sku = "tag-%d" % i
        i += 1
        h = fnv1a(sku.encode(), 64)
        k = (h >> 40, h & 2047)
        if k in seen:
            return seen[k], sku
        seen[k] = sku


def test_rows_the_lookahead_cannot_settle_wait_for_the_key(daemon, tmp_path):
    """a occurs in ranges 1 and 2, b after it: b's row raises the table entry
    a shares with it, so neither of a's rows can tell whether a occurs again.
    Both wait in ingest.deferred_rows; the key build keeps the newer one and
    counts the older one superseded."""
    a, b = colliding_skus()
    pad = "x" * 1500
    src = tmp_path / "collide.csv"
    write_csv(src, ["sku", "name", "description"], [(a, "First", pad), (a, "Second", pad), (b, "Other", pad)])
    d = daemon(workers=1, chunk_size="1k").start(debug=True)
    d.drop(str(src))
    m = Model()
    m.ingest(str(src))
    check(d, m)
    [f] = d.status()
    assert (f["chunks"], f["rows_loaded"], f["rows_superseded"]) == (3, 2, 1)
    log = d.log_text()
    assert len(re.findall(r"; deferred \(\d+ pieces, \d+ copied as new\), 1 rows deferred", log)) == 2, log[-3000:]


def test_a_failed_file_still_builds_the_key(daemon, tmp_path):
    """A chunk fails every attempt (a trigger rejects one sku), so the file
    fails while its key is deferred: the key is still built, and the next
    file loads."""
    src = generate(tmp_path / "p.csv", 6000, 65)
    m = Model()
    m.ingest(src)
    bad = sorted(m.products)[len(m.products) // 2][0]
    d = daemon(workers=2, chunk_size="64k", max_attempts=2, backoff=0.1).start(debug=True)
    query(d.conninfo, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                      "IF NEW.sku = '%s' THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$; "
                      "CREATE TRIGGER refuse BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION refuse()"
                      % bad)
    d.drop(src, wait=False)
    wait_file(d, "failed")
    deadline = time.time() + 60
    while primary_key(d) != "sku":
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.1)
    assert "refused by test" in d.log_text()
    query(d.conninfo, "DROP TRIGGER refuse ON products")
    later = generate(tmp_path / "later.csv", 3000, 66)
    d.drop(later)
    committed = set(query(d.conninfo, "SELECT sku, name, description FROM products"))
    m2 = Model()
    m2.ingest(later)
    for row in m2.table():                          # the later file's rows are all there
        assert row in committed


def test_a_duplicate_from_outside_stops_the_key_until_removed(daemon, tmp_path):
    """An outside session inserts a sku of the file while the key is
    deferred: the key cannot be built, the error names the key, the file
    waits; once the row is gone the key is built and the file completes."""
    src = generate(tmp_path / "p.csv", 20000, 67)
    m = Model()
    m.ingest(src)
    sku = sorted(m.products)[0][0]
    d = daemon(workers=1, chunk_size="64k").start(debug=True)
    d.drop(src, wait=False)
    deadline = time.time() + 60
    while not query(d.conninfo, "SELECT 1 FROM ingest.files WHERE deferred_key IS NOT NULL"):
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.02)
    query(d.conninfo, "INSERT INTO products (sku, name) VALUES (%s, 'Outside Writer')", (sku,))
    d.wait_log("is duplicated", timeout=120)
    assert "cannot build the primary key deferred by file" in d.log_text()
    assert d.status()[0]["state"] == "loading"
    query(d.conninfo, "DELETE FROM products WHERE name = 'Outside Writer'")
    wait_file(d, "done")
    d.wait_log("products: primary key built in")
    deadline = time.time() + 30
    while d.status()[0]["aggregated_at"] is None:
        assert time.time() < deadline
        time.sleep(0.1)
    check(d, m)
