"""Checkpoint and resume: a stop or a crash mid-load, then a start, completes
the load from ingest.chunks without redoing committed chunks."""
import signal
import time

from conftest import generate, primary_key, query
from model import Model


def wait_chunks_done(d, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE state = 'done'")
        if got and got[0][0] >= n:
            return
        time.sleep(0.02)
    raise AssertionError("chunks not done:\n" + d.log_text()[-3000:])


def committed(d):
    return query(d.conninfo, "SELECT no, attempts, finished_at, rows_loaded FROM ingest.chunks "
                             "WHERE state = 'done' ORDER BY no")


def interrupted_load(daemon, tmp_path, sig):
    src = generate(tmp_path / "p.csv", 40000, 6)
    d = daemon(workers=2, chunk_size="32k").start()
    d.drop(src, wait=False)
    wait_chunks_done(d, 20)
    d.stop(sig)
    time.sleep(0.5)
    assert d.workers_alive() == []              # workers died with (or before) the supervisor
    before = committed(d)
    assert primary_key(d) is None               # a first load: the key is deferred, and resumed so
    total = query(d.conninfo, "SELECT chunks FROM ingest.files")[0][0]
    assert 20 <= len(before) < total
    d.start()
    d.ctl("status")
    deadline = time.time() + 120
    while query(d.conninfo, "SELECT state FROM ingest.files")[0][0] != "done":
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.1)
    after = {r[0]: r for r in committed(d)}
    for row in before:                          # committed chunks were not redone
        assert after[row[0]] == row
    m = Model()
    m.ingest(src)
    assert d.products() == m.table()
    assert d.aggregate() == m.aggregate()
    assert primary_key(d) == "sku"
    [f] = d.status()
    assert f["rows_loaded"] == len(m.products)
    assert f["rows_loaded"] + f["rows_superseded"] == 40000
    import os
    assert os.listdir(os.path.join(d.state, "processing")) == []
    d.stop()
    assert d.workers_alive() == []
    deadline = time.time() + 10                     # no orphan database connection
    while query(d.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()")[0][0]:
        assert time.time() < deadline
        time.sleep(0.1)
    return d


def test_sigterm_mid_load_then_restart(daemon, tmp_path):
    d = interrupted_load(daemon, tmp_path, signal.SIGTERM)
    assert "SIGTERM" in d.log_text() or "Terminated" in d.log_text()


def test_supervisor_killed_mid_load_then_restart(daemon, tmp_path):
    interrupted_load(daemon, tmp_path, signal.SIGKILL)
