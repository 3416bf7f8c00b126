"""The metrics endpoint (metrics.listen, ingestd(8) METRICS) and the events
for downstream (NOTIFY ingest_events). The counters are compared with the
sums in ingest.* and with what the test itself put in the files (the reject
codes of rows it made bad on purpose); the exposition with promtool; the
endpoint's latency while the database is locked, planning a big file, or
down."""
import concurrent.futures
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest

from conftest import INGESTD, PGCLUSTER, Daemon, free_port, generate, query
from model import COLUMNS, Model, write_csv

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def metrics_conf(port):
    return 'metrics: { listen = "127.0.0.1:%d"; };\n' % port


def fetch(port, path="/metrics", method="GET", timeout=5):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def parse(text):
    """{(name, frozenset of (label, value))): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, "not an exposition line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def scrape(port):
    status, headers, body = fetch(port)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(body), body


def wait_for(cond, what, timeout=60):
    deadline = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def assert_counters_match_database(samples, conninfo):
    """Counters of a daemon that ran alone on a fresh database equal the sums
    in ingest.*."""
    for kind, state, n in query(conninfo, "SELECT kind, state, count(*) FROM ingest.files GROUP BY 1, 2"):
        assert value(samples, "ingestd_files_total", kind=kind, result=state) == n, (kind, state)
    sums = {k: (l, r, s) for k, l, r, s in query(
        conninfo, "SELECT kind, sum(rows_loaded), sum(rows_rejected), sum(rows_superseded) "
                  "FROM ingest.files GROUP BY kind")}
    for kind in ("ingest", "update"):
        got = tuple(value(samples, "ingestd_rows_total", kind=kind, outcome=o)
                    for o in ("loaded", "rejected", "superseded"))
        assert got == tuple(float(x) for x in sums.get(kind, (0, 0, 0))), kind
    by_code = dict(query(conninfo, "SELECT code, count(*) FROM ingest.rejects GROUP BY code"))
    for (name, labels), v in samples.items():
        if name == "ingestd_rejects_total":
            assert v == by_code.get(dict(labels)["reason"], 0), labels
    done = query(conninfo, "SELECT count(*) FROM ingest.chunks WHERE state = 'done'")[0][0]
    assert value(samples, "ingestd_chunks_total", result="done") == done


def promtool_clean(body):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


# ---- bad rows with a known code each --------------------------------------

def bad_rows_file(path):
    """A file with good rows and one bad row of each kind the loader knows;
    returns the codes the test expects, by its own construction."""
    lines = [b"sku,name,description"]
    expected = {}
    for i in range(200):
        lines.append(b"S%04d,Name %d,desc %d" % (i, i % 7, i))
    bad = [
        ("field_count", b"X1,only two"),
        ("field_count", b"X2,a,b,c"),
        ("quote", b'X3,"unterminated,desc'),
        ("quote", b'X4,na"me,desc'),
        ("utf8", b"X5,caf\xe9,desc"),
        ("nul", b"X6,n\x00ul,desc"),
        ("empty_sku", b",no sku,desc"),
        ("empty_sku", b"  ,blank sku,desc"),
        ("field_too_long", b"X7," + b"n" * 300 + b",desc"),
    ]
    # the unterminated quote swallows the rest of the file: it goes last
    bad.sort(key=lambda b: b[1].startswith(b'X3'))
    for code, row in bad:
        lines.append(row)
        expected[code] = expected.get(code, 0) + 1
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return expected


def test_metrics_counts_equal_database_and_known_rejects(daemon, tmp_path):
    """After an ingest with bad rows of every code and an update file with
    unknown skus, the counters equal ingest.*'s sums, the reject codes are the
    ones the test planted, and promtool finds nothing wrong."""
    port = free_port()
    d = daemon(extra=metrics_conf(port), max_field=256).start()
    expected = bad_rows_file(tmp_path / "bad.csv")
    d.drop(str(tmp_path / "bad.csv"))
    upd = tmp_path / "upd.csv"
    known = [["S%04d" % i, "new %d" % i] for i in range(10)]
    write_csv(upd, ["sku", "description"], known + [["NOPE1", "x"], ["NOPE2", "y"]])
    d.drop(str(upd), kind="update")
    expected["unknown_sku"] = 2
    codes = dict(query(d.conninfo, "SELECT code, count(*) FROM ingest.rejects GROUP BY code"))
    assert codes == expected
    samples = wait_for(lambda: (lambda s: s if value(s, "ingestd_files_total", kind="update", result="done") == 1
                                else None)(scrape(port)[0]), "the update file in the metrics")
    assert_counters_match_database(samples, d.conninfo)
    for code, n in expected.items():
        assert value(samples, "ingestd_rejects_total", reason=code) == n
    assert value(samples, "ingestd_database_up") == 1
    assert value(samples, "ingestd_leader") == 1
    assert value(samples, "ingestd_workers_max") == 2
    assert value(samples, "ingestd_file_duration_seconds_count") == 2
    assert value(samples, "ingestd_node_info", node="test-node") == 1
    assert value(samples, "process_open_fds") > 3
    assert value(samples, "ingestd_worker_cpu_seconds_total") > 0
    promtool_clean(scrape(port)[1])


def test_http_methods_paths_and_slow_clients(daemon):
    """GET and HEAD of /metrics only; an idle connection and a client that
    sends half a request do not hold up others; 100 scrapes at once are all
    served."""
    port = free_port()
    daemon(extra=metrics_conf(port)).start()
    wait_for(lambda: fetch(port)[0] == 200, "the endpoint")
    assert fetch(port, "/")[0] == 404
    assert fetch(port, "/metrics/x")[0] == 404
    status, headers, _ = fetch(port, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert fetch(port, method="HEAD")[0] == 200
    idle = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")   # and never the end of the headers
    try:
        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            results = list(pool.map(lambda _: fetch(port)[0], range(100)))
        assert results == [200] * 100
    finally:
        idle.close()
        half.close()


def latencies(port, n=200):
    out = []
    for _ in range(n):
        t = time.monotonic()
        status, _, _ = fetch(port)
        out.append(time.monotonic() - t)
        assert status == 200
    return sorted(out)


def p99(xs):
    return xs[int(len(xs) * 0.99) - 1]


def test_scrape_fast_while_products_locked_and_planning(daemon, tmp_path):
    """p99 of 200 scrapes under 50 ms while another session holds an
    exclusive lock on products (the load waits behind it) and a big file is
    being planned."""
    port = free_port()
    d = daemon(extra=metrics_conf(port), chunk_size="1M").start()
    d.drop(generate(tmp_path / "first.csv", 100))
    big = generate(tmp_path / "big.csv", 300000, 2)
    locker = psycopg2.connect(d.conninfo)
    cur = locker.cursor()
    cur.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
    try:
        d.drop(big, wait=False)
        wait_for(lambda: "planning" in d.log_text() or query(
            d.conninfo, "SELECT count(*) FROM ingest.files WHERE state <> 'done'")[0][0] > 0, "the big file")
        lat = latencies(port)
    finally:
        locker.rollback()
        locker.close()
    assert p99(lat) < 0.05, "p99 %.3f s" % p99(lat)
    wait_for(lambda: query(d.conninfo, "SELECT state FROM ingest.files ORDER BY id DESC LIMIT 1")[0][0] == "done",
             "the big file to load", timeout=240)


@pytest.fixture
def own_pg():
    """A private cluster this test may stop and start."""
    top = tempfile.mkdtemp(prefix="ingestd-mpg-")
    os.chmod(top, 0o755)
    d, port = os.path.join(top, "pg"), free_port()
    conninfo = subprocess.run([PGCLUSTER, "start", d, str(port)], check=True, capture_output=True,
                              text=True).stdout.strip()
    holder = {"dir": d, "port": port, "conninfo": conninfo}
    yield holder
    subprocess.run([PGCLUSTER, "stop", d, "immediate"], capture_output=True)
    shutil.rmtree(top, ignore_errors=True)


def pg_stop(pg):
    subprocess.run([PGCLUSTER, "stop", pg["dir"], "immediate"], check=True, capture_output=True)


def pg_start(pg):
    subprocess.run([PGCLUSTER, "start", pg["dir"], str(pg["port"])], check=True, capture_output=True)


def test_scrape_fast_and_database_down_while_postgres_stopped(own_pg, tmp_path):
    port = free_port()
    d = Daemon(str(tmp_path), own_pg["conninfo"], extra=metrics_conf(port)).start()
    try:
        wait_for(lambda: value(scrape(port)[0], "ingestd_database_up") == 1, "database up")
        pg_stop(own_pg)
        wait_for(lambda: value(scrape(port)[0], "ingestd_database_up") == 0, "database down")
        lat = latencies(port)
        assert p99(lat) < 0.05, "p99 %.3f s" % p99(lat)
        pg_start(own_pg)
        wait_for(lambda: value(scrape(port)[0], "ingestd_database_up") == 1, "database up again", timeout=30)
    finally:
        d.stop()


def test_metrics_listen_errors(daemon, tmp_path):
    """A malformed address is a configuration error naming the key; a port
    in use stops the start with a message naming it."""
    d = daemon(extra='metrics: { listen = "9187"; };\n')
    p = subprocess.run([INGESTD, "-c", d.config, "--check-config"], capture_output=True, text=True)
    assert p.returncode != 0 and "metrics.listen" in p.stderr and "HOST:PORT" in p.stderr, p.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d.write_config(extra=metrics_conf(port))
        d.start(wait_ready=False)
        assert d.proc.wait(30) != 0
        assert "cannot serve metrics on 127.0.0.1:%d" % port in d.log_text()


# ---- events -----------------------------------------------------------------

def listen(conninfo):
    c = psycopg2.connect(conninfo)
    c.autocommit = True
    c.cursor().execute("LISTEN ingest_events")
    return c


def events(conn, until, timeout=120):
    """Payloads (parsed) until until(list) is true."""
    got = []
    deadline = time.time() + timeout
    while not until(got):
        assert time.time() < deadline, "events so far: %r" % got
        if select.select([conn], [], [], 1) != ([], [], []):
            conn.poll()
            while conn.notifies:
                got.append(json.loads(conn.notifies.pop(0).payload))
    return got


def test_events_for_files_and_refreshes(daemon, tmp_path):
    """A file done, a file failed and the products_agg refresh after them
    each announce themselves with what ingest.files and products_agg hold."""
    d = daemon(max_ratio=0.01).start()
    conn = listen(d.conninfo)
    good = generate(tmp_path / "good.csv", 2000)
    d.drop(good)
    bad = tmp_path / "bad.csv"
    bad_rows_file(bad)        # 9 bad rows of 209: above rejects.max_ratio
    d.drop(str(bad), wait=False)
    got = events(conn, lambda g: sum(e["event"] == "file" for e in g) == 2
                 and any(e["event"] == "aggregate" and e["files"] > 0 for e in g)
                 and g[-1]["event"] == "aggregate" and 2 in [i for e in g if e["event"] == "aggregate"
                                                            for i in e["file_ids"]])
    files = {e["id"]: e for e in got if e["event"] == "file"}
    for fid, name, kind, state, l, r, s in query(
            d.conninfo, "SELECT id, name, kind, state, rows_loaded, rows_rejected, rows_superseded "
                        "FROM ingest.files"):
        e = files[fid]
        assert (e["name"], e["kind"], e["state"]) == (name, kind, state)
        assert (e["rows_loaded"], e["rows_rejected"], e["rows_superseded"]) == (l, r, s)
        assert e["seconds"] >= 0
    assert files[1]["state"] == "done" and files[1]["rows_loaded"] + files[1]["rows_superseded"] == 2000 and files[1]["error"] is None
    assert files[2]["state"] == "failed" and "rejects.max_ratio" in files[2]["error"]
    assert files[2]["rejects"]["field_count"] == 2
    aggregated = sorted(i for e in got if e["event"] == "aggregate" for i in e["file_ids"])
    assert aggregated == [1, 2]
    conn.close()


# ---- the shipped Prometheus rules and Grafana dashboard, against the real thing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMETHEUS_CONF = os.path.join(ROOT, "conf", "prometheus")
DASHBOARD = os.path.join(ROOT, "conf", "grafana", "ingestd.json")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def test_promtool_checks_and_alert_unit_tests():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        p = subprocess.run([PROMTOOL] + args, cwd=PROMETHEUS_CONF, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


class Prometheus:
    """Debian's Prometheus on loopback, scraping one ingestd every second and
    evaluating the shipped alerts.yml every second."""

    def __init__(self, tmp_path, target):
        self.port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(
            "global: { scrape_interval: 1s, evaluation_interval: 1s }\n"
            "rule_files: [ %s ]\n"
            "scrape_configs:\n"
            "  - job_name: ingestd\n"
            "    static_configs: [ { targets: [ '%s' ] } ]\n" % (os.path.join(PROMETHEUS_CONF, "alerts.yml"), target))
        self.log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ready(), "Prometheus to be ready", timeout=60)

    def ready(self):
        assert self.proc.poll() is None, "Prometheus exited: " + open(self.log.name).read()[-2000:]
        try:
            return fetch(self.port, "/-/ready")[0] == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = "%s?%s" % (path, urllib.parse.urlencode(params))
        status, _, body = fetch(self.port, url)
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", (params, body)
        return reply["data"]

    def query(self, expr):
        """[(labels, float)] of an instant query."""
        return [(r["metric"], float(r["value"][1])) for r in self.api("/api/v1/query", query=expr)["result"]]

    def scalar(self, expr):
        got = self.query(expr)
        assert len(got) == 1, (expr, got)
        return got[0][1]

    def firing(self):
        return {a["labels"]["alertname"] for a in self.api("/api/v1/alerts")["alerts"] if a["state"] == "firing"}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def panel_queries():
    """(panel title, expr) of every panel of the dashboard."""
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                yield p["title"], t["expr"]
    with open(DASHBOARD) as f:
        return list(walk(json.load(f)["panels"]))


def substitute(expr, instance):
    """What Grafana sends for the dashboard's variables."""
    for var, val in (("$__rate_interval", "2m"), ("$job", "ingestd"), ("$instance", instance)):
        expr = expr.replace(var, val)
    return expr


def test_prometheus_counters_dashboard_and_alerts(own_pg, tmp_path):
    """During a real load scraped every second by Prometheus: the counters it
    stored equal ingest.*'s sums, every dashboard panel returns data, a
    failed file fires IngestdFileFailed and PostgreSQL stopped fires
    IngestdDatabaseDown; both clear afterwards."""
    port = free_port()
    target = "127.0.0.1:%d" % port
    d = Daemon(str(tmp_path), own_pg["conninfo"], extra=metrics_conf(port), max_ratio=0.01).start()
    prom = Prometheus(tmp_path, target)
    try:
        wait_for(lambda: prom.query('up{job="ingestd"} == 1'), "the first scrape")
        d.drop(generate(tmp_path / "big.csv", 100000))
        bad_rows_file(tmp_path / "bad.csv")            # 9 bad rows of 209: fails
        d.drop(str(tmp_path / "bad.csv"), wait=False)
        wait_for(lambda: query(d.conninfo, "SELECT count(*) FROM ingest.files WHERE aggregated_at IS NOT NULL "
                                           "AND state IN ('done', 'failed')")[0][0] == 2, "both files aggregated")
        files = dict(((k, s), n) for k, s, n in query(
            d.conninfo, "SELECT kind, state, count(*) FROM ingest.files GROUP BY 1, 2"))
        assert files == {("ingest", "done"): 1, ("ingest", "failed"): 1}
        wait_for(lambda: prom.query('ingestd_file_aggregate_lag_seconds_count == 1'), "the refresh of the done file scraped")
        for (kind, state), n in files.items():
            assert prom.scalar('ingestd_files_total{kind="%s",result="%s"}' % (kind, state)) == n
        (l, r, s), = query(d.conninfo, "SELECT sum(rows_loaded), sum(rows_rejected), sum(rows_superseded) "
                                       "FROM ingest.files")
        for outcome, n in (("loaded", l), ("rejected", r), ("superseded", s)):
            assert prom.scalar('ingestd_rows_total{kind="ingest",outcome="%s"}' % outcome) == n, outcome
        for code, n in query(d.conninfo, "SELECT code, count(*) FROM ingest.rejects GROUP BY code"):
            assert prom.scalar('ingestd_rejects_total{reason="%s"}' % code) == n, code
        chunks = query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE state = 'done'")[0][0]
        assert prom.scalar('ingestd_chunks_total{result="done"}') == chunks
        empty = []
        for title, expr in panel_queries():
            got = prom.query(substitute(expr, target))
            if not any(v == v and abs(v) != float("inf") for _, v in got):
                empty.append((title, substitute(expr, target), got))
        assert not empty, "panels without data: %r" % empty
        wait_for(lambda: "IngestdFileFailed" in prom.firing(), "IngestdFileFailed to fire", timeout=30)
        assert "IngestdDatabaseDown" not in prom.firing()
        pg_stop(own_pg)
        wait_for(lambda: "IngestdDatabaseDown" in prom.firing(), "IngestdDatabaseDown to fire", timeout=90)
        pg_start(own_pg)
        wait_for(lambda: not prom.firing() & {"IngestdDatabaseDown", "IngestdFileFailed"},
                 "the alerts to clear", timeout=120)
        assert prom.scalar("ingestd_database_up") == 1
    finally:
        prom.stop()
        d.stop()
