"""Fixtures: one throwaway PostgreSQL cluster per session (tools/pgcluster,
run as an unprivileged user, removed at the end), a fresh database per test,
and ingestd daemons started on it with a private set of folders."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("INGESTD_BUILD", ROOT)
INGESTD = os.path.join(BUILD, "daemon", "ingestd")
INGESTCTL = os.path.join(BUILD, "daemon", "ingestctl")
GEN = os.path.join(BUILD, "tools", "ingest-gen")
PGCLUSTER = os.path.join(ROOT, "tools", "pgcluster")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg():
    top = tempfile.mkdtemp(prefix="ingestd-pg-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "pg")
    out = subprocess.run([PGCLUSTER, "start", d, str(free_port()), "max_wal_size=1GB",
                          "max_connections=200"], check=True, capture_output=True, text=True)
    conninfo = out.stdout.strip()
    yield conninfo
    subprocess.run([PGCLUSTER, "stop", d, "immediate"])
    shutil.rmtree(top, ignore_errors=True)


_db_counter = [0]


@pytest.fixture
def db(pg):
    """A fresh database; yields its conninfo."""
    _db_counter[0] += 1
    name = "t%d_%d" % (os.getpid(), _db_counter[0])
    admin = psycopg2.connect(pg)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE " + name)
    conninfo = pg.replace("dbname=postgres", "dbname=" + name)
    yield conninfo
    admin.cursor().execute("DROP DATABASE %s WITH (FORCE)" % name)
    admin.close()


def query(conninfo, sql, args=None):
    with psycopg2.connect(conninfo) as c, c.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else None
    c.close()
    return rows


class Daemon:
    """An ingestd process with its own folders and config under `root`."""

    def __init__(self, root, conninfo, tag="", **settings):
        """tag: a name for this daemon's config and log, so that several
        daemons (nodes) can share the folders under one root."""
        self.root = root
        self.conninfo = conninfo
        self.incoming = os.path.join(root, "incoming")
        self.updates = os.path.join(root, "updates")
        self.state = os.path.join(root, "state")
        self.config = os.path.join(root, "ingestd%s.conf" % tag)
        self.log_path = os.path.join(root, "ingestd%s.log" % tag)
        self.proc = None
        self.write_config(**settings)

    def write_config(self, workers=2, chunk_size="64k", key="sku", interval=60,
                     after_load="true", max_attempts=3, backoff=0.2, max_ratio=0.5,
                     max_field=65536, max_ranges=1000000, count_memory=None, extra="",
                     node="test-node", heartbeat=2, takeover_after=10, partitions=0):
        # max_ranges: the tests want chunk_size to decide (many small chunks)
        self.node = node
        with open(self.config, "w") as f:
            f.write('cluster: { node = "%s"; heartbeat = %s; takeover_after = %s; };\n'
                    % (node, heartbeat, takeover_after))
            f.write('database: { conninfo = "%s"; partitions = %d; };\n' % (self.conninfo, partitions))
            f.write('paths: { incoming = "%s"; updates = "%s"; state = "%s"; };\n'
                    % (self.incoming, self.updates, self.state))
            f.write('workers = %d;\nchunk_size = "%s";\nkey = "%s";\nmax_ranges = %d;\n'
                    % (workers, chunk_size, key, max_ranges))
            f.write("aggregate: { interval = %s; after_load = %s;%s };\n"
                    % (interval, after_load, "" if count_memory is None else ' count_memory = "%s";' % count_memory))
            f.write("retry: { max_attempts = %d; backoff = %s; };\n" % (max_attempts, backoff))
            f.write("rejects: { max_ratio = %s; };\nlimits: { max_field = %d; };\n"
                    % (max_ratio, max_field))
            f.write(extra)

    def start(self, wait_ready=True, debug=False, prefix=()):
        """prefix: a command to run ingestd under, such as setpriv."""
        for d in (self.incoming, self.updates):
            os.makedirs(d, exist_ok=True)
        self.log = open(self.log_path, "a")
        args = list(prefix) + [INGESTD, "-c", self.config] + (["--debug"] if debug else [])
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_log("ready:", timeout=30)
        return self

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, needle, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.log_text():
                return
            if self.proc and self.proc.poll() is not None:
                raise AssertionError("ingestd exited (%s):\n%s" % (self.proc.returncode, self.log_text()))
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %r in log:\n%s" % (needle, self.log_text()[-4000:]))

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def ctl(self, *args, check=True, timeout=300):
        p = subprocess.run([INGESTCTL, "-c", self.config] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("ingestctl %s failed (%d): %s%s\nlog:\n%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr, self.log_text()[-4000:]))
        return p

    def drop(self, path, kind="ingest", wait=True):
        """Drops a file the way users do, through ingestctl; waits for it."""
        return self.ctl(kind, path, *(["--wait", "--timeout", "240"] if wait else []),
                        check=wait)

    def status(self):
        return json.loads(self.ctl("status", "--json", "--all").stdout)["files"]

    def products(self):
        return query(self.conninfo, "SELECT sku, name, description FROM products ORDER BY sku, name")

    def aggregate(self):
        return dict(query(self.conninfo, "SELECT name, no_of_products FROM products_agg"))

    def workers_alive(self):
        out = subprocess.run(["pgrep", "-f", "ingestd -c %s --worker" % self.config],
                             capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


# products as one table, or hash-partitioned by sku (database.partitions).
# A test module with BOTH_LAYOUTS = True runs each of its tests that use the
# daemon fixture on both.
LAYOUTS = {"plain": 0, "partitioned": 4}


def pytest_generate_tests(metafunc):
    if getattr(metafunc.module, "BOTH_LAYOUTS", False) and "layout" in metafunc.fixturenames:
        metafunc.parametrize("layout", sorted(LAYOUTS))


@pytest.fixture
def layout():
    return "plain"


@pytest.fixture
def daemon(db, tmp_path, layout):
    """A factory of daemons on the test's database; all are stopped at the end."""
    made = []

    def make(**settings):
        settings.setdefault("partitions", LAYOUTS[layout])
        d = Daemon(str(tmp_path), db, **settings)
        made.append(d)
        return d
    yield make
    for d in made:
        if d.proc and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def generate(path, rows, seed=1, *extra):
    subprocess.run([GEN, "--rows", str(rows), "--seed", str(seed), "-o", str(path)] + list(extra),
                   check=True)
    return str(path)


# root without the capabilities that bypass file permissions, so that tests of
# unreadable files and unwritable folders mean the same as for the ingestd user
NO_DAC = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


# How chunks apply (daemon/worker/apply.h): with products' key, in batches,
# or, on a first load into an empty products, straight into the table with
# the key built afterwards ("deferred"; later files then take batches). Tests
# of exact results run both.
APPLY_PATHS = {"batches": "defer_key = false;\n", "deferred": ""}
apply_paths = pytest.mark.parametrize("path", sorted(APPLY_PATHS))
keyed_paths = pytest.mark.parametrize("path", ["batches"])



def primary_key(d):
    """products' primary key columns ("sku" or "sku,name"), or None while it
    is deferred."""
    rows = query(d.conninfo,
                 "SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM pg_index i "
                 "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) "
                 "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att "
                 "WHERE i.indrelid = 'products'::regclass AND i.indisprimary")
    return rows[0][0]


def apply_paths_taken(d, file_id=None):
    """ingest.chunks.apply_path of every committed chunk (of one file), in order:
    "batches" or "deferred", with "-new"/"-partly-new" when rows were
    copied as new without a full probe and "key+" when the chunk built the
    deferred key first."""
    rows = query(d.conninfo, "SELECT apply_path FROM ingest.chunks WHERE state = 'done' "
                 "AND (%s IS NULL OR file_id = %s) ORDER BY file_id, no", (file_id, file_id))
    return [r[0] for r in rows]


def path_kind(apply_path):
    """"key+batches-new" -> "batches"."""
    return apply_path.split("+")[-1].split("-")[0]


def assert_apply_path(d, path):
    """Every committed chunk took the path (a deferred first load: some chunk
    did)."""
    kinds = [path_kind(p) for p in apply_paths_taken(d)]
    assert path in kinds, kinds
    assert path == "deferred" or set(kinds) == {path}, kinds