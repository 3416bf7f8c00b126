"""Database failover (ingestd(8), FAILOVER): a primary and a streaming standby
on this machine (tools/pgcluster standby: pg_basebackup -R), ingestd on a
multi-host conninfo with target_session_attrs=read-write. The primary is
killed (SIGKILL to every one of its processes) and the standby promoted. Every
test ends with the tables equal to the sequential model, every file's rows
accounted for and nothing left in processing/."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import psycopg2
import pytest

from conftest import PGCLUSTER, Daemon, free_port, generate, primary_key, query
from model import COLUMNS, Model, read_rows, write_csv
from test_faults import check_end_state


class Replicated:
    """A primary and its standby; `sync` makes the standby synchronous."""

    def __init__(self, sync):
        self.top = tempfile.mkdtemp(prefix="ingestd-repl-")
        os.chmod(self.top, 0o755)
        self.p_dir, self.s_dir = os.path.join(self.top, "primary"), os.path.join(self.top, "standby")
        self.p_port, self.s_port = free_port(), free_port()
        sync_names = ["synchronous_standby_names=standby"] if sync else []
        out = subprocess.run([PGCLUSTER, "start", self.p_dir, str(self.p_port)] + sync_names,
                             check=True, capture_output=True, text=True).stdout
        subprocess.run([PGCLUSTER, "standby", self.s_dir, str(self.s_port), self.p_dir, str(self.p_port)],
                       check=True, capture_output=True)
        user = re.search(r"user=(\S+)", out).group(1)
        self.primary = "host=%s port=%d user=%s dbname=postgres" % (self.p_dir, self.p_port, user)
        self.standby = "host=%s port=%d user=%s dbname=postgres" % (self.s_dir, self.s_port, user)
        self.conninfo = ("host=%s,%s port=%d,%d user=%s dbname=postgres target_session_attrs=read-write "
                         "connect_timeout=2" % (self.p_dir, self.s_dir, self.p_port, self.s_port, user))
        want = "sync" if sync else "async"
        self.wait(lambda: query(self.primary, "SELECT sync_state FROM pg_stat_replication") == [(want,)],
                  "the standby streaming (%s)" % want)

    @staticmethod
    def wait(cond, what, timeout=60):
        deadline = time.time() + timeout
        while not cond():
            assert time.time() < deadline, "timed out waiting for " + what
            time.sleep(0.05)

    def caught_up(self):
        """Until the standby has replayed all the primary has written."""
        lsn = query(self.primary, "SELECT pg_current_wal_lsn()::text")[0][0]
        self.wait(lambda: query(self.standby, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0],
                  "the standby to replay " + lsn)

    def cut_off(self):
        """The standby stops receiving WAL (a paused replay would not do: a
        promotion replays whatever was received)."""
        c = psycopg2.connect(self.standby)
        c.autocommit = True
        c.cursor().execute("ALTER SYSTEM SET primary_conninfo = ''")
        c.cursor().execute("SELECT pg_reload_conf()")
        c.close()
        self.wait(lambda: query(self.primary, "SELECT count(*) FROM pg_stat_replication")[0][0] == 0,
                  "the standby to stop receiving")

    def kill_primary(self):
        """As if its machine died: SIGKILL to the postmaster and all its children."""
        with open(os.path.join(self.p_dir, "data", "postmaster.pid")) as f:
            pid = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid] + [int(k) for k in kids]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def promote(self):
        subprocess.run([PGCLUSTER, "promote", self.s_dir], check=True)

    def close(self):
        for d in (self.p_dir, self.s_dir):
            subprocess.run([PGCLUSTER, "stop", d, "immediate"])
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def replicated():
    made = []

    def make(sync):
        made.append(Replicated(sync))
        return made[-1]
    yield make
    for r in made:
        r.close()


def failover_daemon(tmp_path, r, tag="", **settings):
    opts = dict(workers=2, chunk_size="2M", max_attempts=5, backoff=0.3, heartbeat=0.5, takeover_after=3)
    opts.update(settings)
    return Daemon(str(tmp_path), r.conninfo, tag=tag, **opts)


@contextlib.contextmanager
def one_daemon(replicated, tmp_path, sync, rows, seed):
    """A replicated pair, a file of `rows` and a daemon; the daemon is killed at the end."""
    r = replicated(sync=sync)
    src = generate(tmp_path / "p.csv", rows, seed)
    d = failover_daemon(tmp_path, r).start()
    try:
        yield r, d, src
    finally:
        d.stop(signal.SIGKILL)


def chunks_done(conninfo):
    return query(conninfo, "SELECT file_id, no, attempts, finished_at FROM ingest.chunks WHERE state = 'done'")


def wait_until(cond, what, d, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except psycopg2.Error:
            pass                                  # the database is being failed over
        assert d.proc.poll() is None, d.log_text()[-3000:]
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s:\n%s" % (what, d.log_text()[-4000:]))


def wait_loaded(d, files=1):
    wait_until(lambda: [f["state"] for f in d.status()] == ["done"] * files
               and d.status()[-1]["aggregated_at"] is not None, "the load to finish", d, timeout=240)


def check_loaded(d, src, files=1):
    m = Model()
    m.ingest(src)
    check_end_state(d, m, files=files)
    assert os.listdir(os.path.join(d.state, "failed")) == []


def fail_over(r, d):
    r.kill_primary()
    time.sleep(1)                                 # the daemon notices, and waits
    r.promote()


def waits_logged_once(d):
    """The wait for the database is logged once per distinct error, not per
    chunk: a few lines, however many chunks were in flight."""
    log = d.log_text()
    assert "database connection lost" in log
    assert log.count("database unreachable") <= 3, log[-4000:]


def test_sync_primary_killed_mid_load(replicated, tmp_path):
    with one_daemon(replicated, tmp_path, True, 300000, 41) as (r, d, src):
        d.drop(src, wait=False)
        wait_until(lambda: len(chunks_done(r.primary)) >= 4, "four chunks", d)
        before = chunks_done(r.primary)
        fail_over(r, d)
        promoted = time.time()
        # a synchronous standby has every commit the primary acknowledged
        after = {(f, n): (a, t) for f, n, a, t in chunks_done(r.standby)}
        assert all(after.get((f, n)) == (a, t) for f, n, a, t in before), (before, after)
        wait_loaded(d)
        resumed = query(r.standby, "SELECT extract(epoch FROM min(finished_at)) - %s FROM ingest.chunks "
                                   "WHERE finished_at > to_timestamp(%s)", (promoted, promoted))[0][0]
        print("first chunk committed %.2f s after the promotion" % resumed)
        assert resumed < 15, resumed
        waits_logged_once(d)
        check_loaded(d, src)


def test_async_standby_cut_off_lacks_the_last_chunks(replicated, tmp_path):
    with one_daemon(replicated, tmp_path, False, 300000, 42) as (r, d, src):
        d.drop(src, wait=False)
        wait_until(lambda: len(chunks_done(r.primary)) >= 3, "three chunks", d)
        r.cut_off()
        kept = len(chunks_done(r.standby))
        # claims the standby has (made before the cut-off); later ones it never saw
        claimed = query(r.standby, "SELECT count(*) FROM ingest.chunks WHERE state = 'loading'")[0][0]
        wait_until(lambda: len(chunks_done(r.primary)) >= kept + 3, "three chunks more", d)
        fail_over(r, d)
        assert len(chunks_done(r.standby)) == kept      # the chunks after the cut-off are lost
        wait_loaded(d)
        if claimed:                                     # claims of workers gone: pending again
            assert "pending again" in d.log_text() or "released" in d.log_text()
        check_loaded(d, src)


def test_async_whole_load_lost_loads_again(replicated, tmp_path):
    with one_daemon(replicated, tmp_path, False, 100000, 43) as (r, d, src):
        r.caught_up()                               # the standby has ingest's schema
        r.cut_off()
        d.drop(src)                                 # loaded on the old primary alone
        [old] = d.status()
        assert os.listdir(os.path.join(d.state, "done")) == ["%d-p.csv" % old["id"]]
        fail_over(r, d)
        assert query(r.standby, "SELECT count(*) FROM ingest.files")[0][0] == 0
        wait_loaded(d)
        assert "is unknown to the database" in d.log_text()
        [new] = d.status()
        assert os.listdir(os.path.join(d.state, "done")) == ["%d-p.csv" % new["id"]]
        check_loaded(d, src)


def active(conninfo, pattern):
    """Is a statement like pattern running (the daemon's, not this query)?"""
    return query(conninfo, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query ILIKE %s "
                 "AND pid <> pg_backend_pid()", (pattern,))[0][0] > 0


@pytest.mark.parametrize("moment,statement", [
    ("products_agg_refresh", "%INSERT INTO public.products_agg%"),
    ("deferred_key_build", "CREATE UNIQUE INDEX%"),
])
def test_sync_failover_during(replicated, tmp_path, moment, statement):
    """Killed while that statement runs on the primary: it runs again on the
    promoted standby, and the key is there at the end."""
    with one_daemon(replicated, tmp_path, True, 300000, 44) as (r, d, src):
        d.drop(src, wait=False)
        wait_until(lambda: active(r.primary, statement), moment, d)
        fail_over(r, d)
        wait_loaded(d)
        assert primary_key(d) == "sku"
        check_loaded(d, src)


def test_two_nodes_follow_the_promotion(replicated, tmp_path):
    r = replicated(sync=True)
    src = generate(tmp_path / "p.csv", 300000, 46)
    ns = [failover_daemon(tmp_path, r, tag="-%d" % i, node="node-%d" % i, workers=1) for i in (1, 2)]
    for n in ns:
        n.start()
    try:
        ns[0].drop(src, wait=False)
        wait_until(lambda: len(chunks_done(r.primary)) >= 4, "four chunks", ns[0])
        fail_over(r, ns[0])
        promoted = time.time()
        wait_loaded(ns[0])
        for n in ns:
            assert n.log_text().count("connected to the database") >= 2, n.log_text()[-3000:]
        committed_by = {row[0] for row in query(r.standby, "SELECT DISTINCT node FROM ingest.chunks "
                                                "WHERE finished_at > to_timestamp(%s)", (promoted,))}
        assert committed_by == {"node-1", "node-2"}, committed_by
        ns[1].stop()
        check_loaded(ns[0], src)
    finally:
        for n in ns:
            n.stop(signal.SIGKILL)


def second_database(pg, db, suffix):
    """conninfo of a new database beside the test's (dropped with the cluster)."""
    name = re.search(r"dbname=(\S+)", db).group(1) + suffix
    admin = psycopg2.connect(pg)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE " + name)
    admin.close()
    return db.replace("dbname=" + name[:-len(suffix)], "dbname=" + name)


def test_folders_ahead_of_an_empty_database_load_again(pg, db, tmp_path):
    """The reconciliation rules without replication: the folders of loads
    into one database, then the daemon started on an empty one (as after a
    restore from before the loads). Each file goes back to its own folder,
    under its ID-NAME when its name is taken there, and loads again, in the
    order it first came and before the file that waited in the folder."""
    a = generate(tmp_path / "a.csv", 3000, 47)
    a2 = generate(tmp_path / "a2.csv", 3000, 48)
    u = str(tmp_path / "u.csv")
    rows = list(read_rows(a))[:1500]
    write_csv(u, COLUMNS, [(r["sku"], r["name"], r["description"] + " v2") for r in rows])
    os.makedirs(tmp_path / "run")
    d = Daemon(str(tmp_path / "run"), db, workers=2)
    d.start()
    d.drop(a)
    d.drop(u, kind="update")
    assert sorted(os.listdir(os.path.join(d.state, "done"))) == ["1-a.csv", "2u-u.csv"]
    d.stop()
    shutil.copy(a2, os.path.join(d.incoming, "a.csv"))      # another a.csv waits meanwhile
    os.utime(os.path.join(d.incoming, "a.csv"), (time.time() - 30,) * 2)
    d2 = Daemon(str(tmp_path / "run"), second_database(pg, db, "_empty"), tag="-2", workers=2)
    d2.start()
    try:
        wait_until(lambda: [f["state"] for f in d2.status()] == ["done"] * 3, "three files loaded", d2)
        log = d2.log_text()
        assert "done/1-a.csv is unknown to the database" in log, log
        assert "done/2u-u.csv is unknown to the database" in log, log
        files = query(d2.conninfo, "SELECT name, kind FROM ingest.files ORDER BY id")
        # the lost ones again in their first order, then the one that waited
        assert files == [("1-a.csv", "ingest"), ("u.csv", "update"), ("a.csv", "ingest")], files
        m = Model()
        for name, kind in files:                              # in registration order
            src = {"1-a.csv": a, "a.csv": a2, "u.csv": u}[name]
            m.ingest(src) if kind == "ingest" else m.update(src)
        check_end_state(d2, m, files=3)
    finally:
        d2.stop(signal.SIGKILL)
