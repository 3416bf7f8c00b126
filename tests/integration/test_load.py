"""Exact results: the tables equal a sequential Python model of the same files."""
import csv
import os
import time

import pytest

from conftest import APPLY_PATHS, apply_paths, apply_paths_taken, assert_apply_path, generate, keyed_paths, query
from model import Model, write_csv

BOTH_LAYOUTS = True   # products as one table and partitioned (conftest.LAYOUTS)


def check_against(d, model):
    assert d.products() == model.table()
    assert d.aggregate() == model.aggregate()


def check_accounting(d):
    for f in d.status():
        if f["state"] in ("done",) or f["chunks"]:
            assert f["rows_loaded"] + f["rows_rejected"] + f["rows_superseded"] == f["data_rows"], f


def test_reference_shape_file(daemon, tmp_path):
    src = generate(tmp_path / "products.csv", 60000, 7)
    d = daemon(workers=2, chunk_size="512k").start()
    d.drop(src)
    m = Model("sku")
    m.ingest(src)
    check_against(d, m)
    [f] = d.status()
    assert f["state"] == "done" and f["chunks"] > 8
    assert f["rows_loaded"] == len(m.products)          # distinct skus
    assert f["rows_superseded"] == 60000 - len(m.products)
    assert f["rows_rejected"] == 0
    assert os.path.exists(os.path.join(d.state, "done", "%d-products.csv" % f["id"]))


@apply_paths
def test_tricky_quoting_variant(daemon, tmp_path, path):
    src = generate(tmp_path / "tricky.csv", 20000, 3, "--tricky")
    raw = open(src, encoding="utf-8").read()
    assert '""' in raw and '",' in raw          # the file really has the tricky cases
    d = daemon(workers=3, chunk_size="100k", extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(src)
    m = Model("sku")
    m.ingest(src)
    check_against(d, m)
    check_accounting(d)
    assert_apply_path(d, path)


@apply_paths
def test_composite_key(daemon, tmp_path, path):
    """A sku repeated under another name is a second product with key
    "sku,name" and a replacement with key "sku": the file has 300 of them, so
    a load that keyed by sku alone would miss rows, and one that did not
    match the name on update would apply them to the wrong product."""
    gen = generate(tmp_path / "gen.csv", 30000, 5)
    with open(gen, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    sku, name = header.index("sku"), header.index("name")
    again = [list(r) for r in body[:300]]
    for r in again:
        r[name] += " Junior"
    changed = [list(r) for r in body[300:400]]          # same sku and name: an update of the same product
    for r in changed:
        r[header.index("description")] = "changed"
    src = str(tmp_path / "p.csv")
    write_csv(src, header, body + again + changed)
    d = daemon(workers=2, chunk_size="256k", key="sku,name", extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(src)
    m = Model("sku,name")
    m.ingest(src)
    by_sku = Model("sku")
    by_sku.ingest(src)
    assert len(m.products) >= len(by_sku.products) + 300
    check_against(d, m)
    [f] = d.status()
    assert f["rows_loaded"] == len(m.products)
    twice = query(d.conninfo, "SELECT count(*) FROM (SELECT sku FROM products GROUP BY sku HAVING count(*) > 1) t")
    assert twice[0][0] >= 300
    assert_apply_path(d, path)


WORKERS_CHUNKS = [(w, c) for w in (1, 2, 3, 4) for c in ("1", "700", "16k", "64M")]


@pytest.mark.parametrize("workers,chunk", WORKERS_CHUNKS)
def test_workers_and_chunk_sizes(daemon, tmp_path, workers, chunk):
    rows = 120 if chunk == "1" else 3000
    src = generate(tmp_path / "p.csv", rows, 11, "--tricky")
    d = daemon(workers=workers, chunk_size=chunk).start()
    d.drop(src)
    m = Model("sku")
    m.ingest(src)
    check_against(d, m)
    [f] = d.status()
    size = os.path.getsize(src)
    assert f["lanes"] == workers                 # one key lane per worker
    if chunk == "1":
        assert f["chunks"] == rows * workers     # one record per byte range
    if chunk == "64M":
        assert f["chunks"] == workers and size < 64 << 20
    assert f["rows_loaded"] + f["rows_superseded"] == rows


def test_max_ranges_makes_big_files_use_bigger_ranges(daemon, tmp_path):
    rows = 3000
    src = generate(tmp_path / "p.csv", rows, 13, "--tricky")
    size = os.path.getsize(src)
    d = daemon(workers=2, chunk_size="1k", max_ranges=3).start()
    d.drop(src)
    m = Model("sku")
    m.ingest(src)
    check_against(d, m)
    [f] = d.status()
    assert size > 3 * 1024 * 10                  # chunk_size alone would make > 30 ranges
    assert f["chunks"] == 3 * 2                  # 3 equal ranges x 2 lanes
    assert f["rows_loaded"] + f["rows_superseded"] == rows


@apply_paths
def test_ingest_then_ingest_then_update(daemon, tmp_path, path):
    a = generate(tmp_path / "a.csv", 5000, 21)
    # B: other column order, changes some of A's products, repeats a sku inside B
    m = Model("sku")
    m.ingest(a)
    skus = sorted(m.products)[:300]
    b_rows = [("changed description %d" % i, k[0], "New Name%d" % (i % 7)) for i, k in enumerate(skus)]
    b_rows += [("brand new", "zz-new-%d" % i, "Fresh Person") for i in range(50)]
    b_rows.append(("repeated, last wins", skus[0][0], "Final Name"))
    b = str(tmp_path / "b.csv")
    write_csv(b, ["description", "sku", "name"], b_rows)
    # U: sku,description only; some unknown skus
    u_rows = [(k[0], "updated\nmultiline %d" % i) for i, k in enumerate(sorted(m.products)[100:400])]
    u_rows += [("no-such-sku-%d" % i, "ignored") for i in range(7)]
    u = str(tmp_path / "u.csv")
    write_csv(u, ["sku", "description"], u_rows)

    d = daemon(workers=3, chunk_size="8k", extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(a)
    d.drop(b)
    d.drop(u, kind="update")
    m.ingest(b)
    m.update(u)
    check_against(d, m)
    count_before_u = len(m.products)
    assert query(d.conninfo, "SELECT count(*) FROM products")[0][0] == count_before_u
    files = {f["name"]: f for f in d.status()}
    assert files["u.csv"]["kind"] == "update"
    assert files["u.csv"]["rows_rejected"] == 7
    rejects = query(d.conninfo, "SELECT r.line, r.reason FROM ingest.rejects r "
                                "JOIN ingest.files f ON f.id = r.file_id WHERE f.name = 'u.csv' ORDER BY 1")
    # physical line of each record: the header is line 1, embedded LFs count
    lines, at = [], 2
    for sku, desc in u_rows:
        lines.append(at)
        at += 1 + desc.count("\n")
    assert [r[0] for r in rejects] == lines[-7:]
    assert all("unknown sku" in r[1] for r in rejects)
    check_accounting(d)
    assert_apply_path(d, path)


@apply_paths
def test_update_changes_only_named_columns(daemon, tmp_path, path):
    base = str(tmp_path / "base.csv")
    write_csv(base, ["sku", "name", "description"], [("a", "Ann", "one"), ("b", "Bob", "two")])
    upd = str(tmp_path / "upd.csv")
    write_csv(upd, ["sku", "name"], [("b", "Bobby"), ("c", "Nobody")])
    d = daemon(extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(base)
    d.drop(upd, kind="update")
    assert d.products() == [("a", "Ann", "one"), ("b", "Bobby", "two")]
    assert d.aggregate() == {"Ann": 1, "Bobby": 1}
    assert_apply_path(d, path)


@apply_paths
def test_reload_of_same_content_changes_nothing(daemon, tmp_path, path):
    src = generate(tmp_path / "p.csv", 8000, 4)
    d = daemon(chunk_size="100k", extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(src)
    before = query(d.conninfo, "SELECT sku, file_seq, line FROM products ORDER BY sku")
    d.drop(src)
    after = query(d.conninfo, "SELECT sku, file_seq, line FROM products ORDER BY sku")
    # unchanged rows are skipped, not rewritten; only a sku that repeats inside
    # the file passes through an intermediate value and gets a new version
    import collections
    from model import read_rows
    repeated = {k for k, n in collections.Counter(r["sku"] for r in read_rows(src)).items() if n > 1}
    rewritten = {b[0] for b, a in zip(before, after) if b != a}
    assert len(before) == len(after) and rewritten <= repeated
    assert len(rewritten) < len(before) / 10
    m = Model()
    m.ingest(src)
    m.ingest(src)
    check_against(d, m)
    check_accounting(d)
    assert_apply_path(d, path)


def outside_insert_while_loading(d, src, sku):
    """Drops src while another session inserts sku, and commits that insert
    once a chunk waits on it. Returns the file's chunks' highest attempt."""
    import psycopg2
    outside = psycopg2.connect(d.conninfo)
    outside.cursor().execute("INSERT INTO products (sku, name) VALUES (%s, 'Outside Writer')", (sku,))
    d.drop(src, wait=False)
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND wait_event = 'transactionid' AND pid <> pg_backend_pid()")
    deadline = time.time() + 60
    while query(d.conninfo, waiting)[0][0] == 0:   # the chunk's insert waits on our uncommitted row
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.05)
    outside.commit()
    outside.close()
    while [f["state"] for f in d.status()][-1:] != ["done"] or d.status()[-1]["aggregated_at"] is None:
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.1)
    file_id = d.status()[-1]["id"]
    return query(d.conninfo, "SELECT max(attempts) FROM ingest.chunks WHERE file_id = %s", (file_id,))[0][0]


@keyed_paths
def test_outside_insert_of_a_loading_key_retries_the_chunk(daemon, tmp_path, path):
    """Products already holds most keys of the file, so every key is probed.
    Another session inserts a new sku of the file and commits while the chunk
    waits on it: the chunk fails with a unique violation, is retried, and then
    sees the outside row as an older version that the file's row replaces."""
    src = generate(tmp_path / "p.csv", 2000, 51)
    m = Model()
    m.ingest(src)
    sku = sorted(m.products)[0][0]
    d = daemon(workers=1, chunk_size="1M", backoff=0.2, extra=APPLY_PATHS[path]).start(debug=True)
    # older versions (file 0) of the other keys: the file's rows replace them
    query(d.conninfo, "INSERT INTO products (sku, name, file_seq, line) SELECT unnest(%s::text[]), 'Old', 0, 0",
          ([k[0] for k in m.products if k[0] != sku],))
    attempts = outside_insert_while_loading(d, src, sku)
    check_against(d, m)
    check_accounting(d)
    assert attempts >= 2
    assert "duplicate key value violates unique constraint" in d.log_text()
    assert_apply_path(d, path)
    # the full probe took every batch: none was copied as new
    assert set(apply_paths_taken(d)) == {"batches"}, apply_paths_taken(d)


@pytest.mark.parametrize("path", ["batches"])   # the one path with the new-rows shortcut
def test_outside_insert_into_a_first_load_is_looked_up_again(daemon, tmp_path, path):
    """A first load in batches copies rows as new without looking up every key
    (a sample of keys is not in products). When an outside session inserts a key of the
    chunk meanwhile, that insert fails with a unique violation; it rolls back
    to its savepoint and the rows are looked up in full, in the same attempt,
    and the outside row is an older version that the file's row replaces."""
    src = generate(tmp_path / "p.csv", 2000, 52)
    m = Model()
    m.ingest(src)
    sku = sorted(m.products)[-1][0]
    d = daemon(workers=1, chunk_size="1M", backoff=0.2, extra=APPLY_PATHS[path]).start(debug=True)
    attempts = outside_insert_while_loading(d, src, sku)
    check_against(d, m)
    check_accounting(d)
    assert attempts == 1
    assert_apply_path(d, path)
    # the sample missed the outside row: the rows were looked up in full after all
    assert set(apply_paths_taken(d)) == {path}, apply_paths_taken(d)


@keyed_paths
def test_first_load_copies_new_rows_and_equals_the_model(daemon, tmp_path, path):
    """On a first load with the key kept every chunk copies its rows as new (the
    lookahead drops the rows a later one supersedes, across byte ranges), and the
    tables and the counts equal a sequential load."""
    src = generate(tmp_path / "p.csv", 6000, 53)
    d = daemon(workers=2, chunk_size="200k", extra=APPLY_PATHS[path]).start(debug=True)
    d.drop(src)
    m = Model()
    m.ingest(src)
    check_against(d, m)
    check_accounting(d)
    assert_apply_path(d, path)
    chunks = d.status()[0]["chunks"]
    assert chunks >= 6
    assert apply_paths_taken(d) == [path + "-new"] * chunks, apply_paths_taken(d)
