"""Fault injection: whatever is killed, restarted or unavailable, the load ends
with products and products_agg equal to the sequential model, every chunk
committed exactly once, nothing left in processing/, no orphan worker and no
orphan database connection."""
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2
import pytest

from conftest import NO_DAC, PGCLUSTER, Daemon, free_port, generate, query
from model import Model

BOTH_LAYOUTS = True   # products as one table and partitioned (conftest.LAYOUTS)


def wait_state(d, name, state="done", timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            rows = query(d.conninfo, "SELECT state FROM ingest.files WHERE name = %s ORDER BY id DESC", (name,))
            if rows and rows[0][0] == state:
                return
        except psycopg2.Error:
            pass
        assert d.proc.poll() is None, d.log_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError("%s not %s:\n%s" % (name, state, d.log_text()[-3000:]))


def chunks_done(d):
    return query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE state = 'done'")[0][0]


def check_end_state(d, model, files=1):
    assert d.products() == model.table()
    assert d.aggregate() == model.aggregate()
    status = d.status()
    assert len(status) == files and all(f["state"] == "done" for f in status)
    # exactly once: a chunk applied twice would show its rows as outranked
    # (superseded), so loaded would fall short of the distinct keys
    assert query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE state <> 'done'")[0][0] == 0
    last = status[-1]
    assert last["rows_loaded"] + last["rows_rejected"] + last["rows_superseded"] == last["data_rows"]
    assert os.listdir(os.path.join(d.state, "processing")) == []
    d.stop()
    assert d.workers_alive() == []
    deadline = time.time() + 10
    while query(d.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()")[0][0]:
        assert time.time() < deadline, "orphan database connections"
        time.sleep(0.1)


def check_loaded(d, *paths, files=1):
    """The end state equals the sequential model of `paths` in that order."""
    m = Model()
    for path in paths:
        m.ingest(path)
    check_end_state(d, m, files=files)


def test_workers_killed_at_random_moments(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 300000, 13)
    d = daemon(workers=2, chunk_size="96k", max_attempts=100, backoff=0.02).start()
    d.drop(src, wait=False)
    rnd, kills = random.Random(7), 0
    deadline = time.time() + 240
    while kills < 25 and time.time() < deadline:
        alive = d.workers_alive()
        if alive:
            try:
                os.kill(rnd.choice(alive), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass                                  # it had just finished
        time.sleep(rnd.uniform(0.02, 0.25))
    assert kills >= 20
    wait_state(d, "p.csv")
    assert "killed by signal 9" in d.log_text()
    retried = query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE attempts > 1")[0][0]
    assert retried >= 10
    m = Model()
    m.ingest(src)
    [f] = d.status()
    assert f["rows_loaded"] == len(m.products)       # every chunk applied once
    check_end_state(d, m)


@pytest.fixture
def own_pg():
    """A cluster of this test's own, to restart and stop at will."""
    top = tempfile.mkdtemp(prefix="ingestd-ownpg-")
    os.chmod(top, 0o755)
    d, port = os.path.join(top, "pg"), str(free_port())
    conninfo = subprocess.run([PGCLUSTER, "start", d, port], check=True, capture_output=True,
                              text=True).stdout.strip()

    class Pg:
        def stop(self, mode="immediate"):
            subprocess.run([PGCLUSTER, "stop", d, mode], check=True)

        def start(self):
            subprocess.run([PGCLUSTER, "start", d, port], check=True, capture_output=True)
    pg = Pg()
    pg.conninfo = conninfo
    yield pg
    pg.stop()
    shutil.rmtree(top, ignore_errors=True)


def make_daemon(tmp_path, conninfo, **kw):
    return Daemon(str(tmp_path), conninfo, **kw)


def test_postgres_restarted_mid_load_and_down_for_30s(own_pg, tmp_path):
    src = generate(tmp_path / "p.csv", 100000, 14)
    d = make_daemon(tmp_path, own_pg.conninfo, workers=2, chunk_size="64k", max_attempts=50, backoff=0.5)
    d.start()
    try:
        d.drop(src, wait=False)
        while chunks_done(d) < 5:
            time.sleep(0.05)
        own_pg.stop("immediate")                      # crash
        own_pg.start()
        while chunks_done(d) < 40:
            time.sleep(0.05)
        own_pg.stop("immediate")
        time.sleep(30)                                # down for 30 s
        assert d.proc.poll() is None
        own_pg.start()
        wait_state(d, "p.csv")
        assert "database connection lost" in d.log_text()
        check_loaded(d, src)
    finally:
        d.stop(signal.SIGKILL)


def test_database_unreachable_at_start(own_pg, tmp_path):
    own_pg.stop("fast")
    src = generate(tmp_path / "p.csv", 5000, 15)
    d = make_daemon(tmp_path, own_pg.conninfo)
    os.makedirs(d.incoming)
    shutil.copy(src, os.path.join(d.incoming, "p.csv"))
    os.utime(os.path.join(d.incoming, "p.csv"), (time.time() - 60,) * 2)
    d.start(wait_ready=False)
    try:
        d.wait_log("database unreachable, retrying")
        time.sleep(3)
        assert "ready:" not in d.log_text() and d.proc.poll() is None
        assert os.path.exists(os.path.join(d.incoming, "p.csv"))
        own_pg.start()
        d.wait_log("ready:")
        wait_state(d, "p.csv")
        check_loaded(d, src)
    finally:
        d.stop(signal.SIGKILL)


def test_unwritable_folder_then_recovers(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 3000, 16)
    d = daemon()
    d.start(prefix=NO_DAC)
    processing = os.path.join(d.state, "processing")
    os.chmod(processing, 0o555)
    try:
        shutil.copy(src, os.path.join(d.incoming, "p.csv"))
        d.wait_log("cannot move")
        assert "Permission denied; will try again" in d.log_text()
        time.sleep(1)
        assert os.path.exists(os.path.join(d.incoming, "p.csv"))    # nothing lost
        assert d.status() == []
    finally:
        os.chmod(processing, 0o755)
    wait_state(d, "p.csv")
    check_loaded(d, src)


def test_same_file_twice_and_replaced_while_loading(daemon, tmp_path):
    a = generate(tmp_path / "a.csv", 60000, 17)
    b = generate(tmp_path / "b.csv", 3000, 18)
    d = daemon(workers=2, chunk_size="64k").start()
    d.drop(a)
    d.drop(a)                                         # the same file again
    d.drop(a, wait=False)                             # and again; replaced while it loads:
    while not query(d.conninfo, "SELECT count(*) FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                                "WHERE f.id = 3 AND f.state = 'loading' AND c.state = 'done'")[0][0]:
        time.sleep(0.02)
    replaced = tmp_path / "new" / "a.csv"
    replaced.parent.mkdir()
    shutil.copy(b, replaced)
    d.drop(str(replaced))                             # same name, new content
    files = d.status()
    assert [f["name"] for f in files] == ["a.csv"] * 4
    assert len({f["sha256"] for f in files[:3]}) == 1 and files[3]["sha256"] != files[0]["sha256"]
    check_loaded(d, a, a, a, b, files=4)
