"""ingestctl and ingestd command lines: help, config errors, status, retry,
aggregate with checked identifiers."""
import json
import re
import os
import subprocess
import time

from conftest import INGESTCTL, INGESTD, generate, query
from model import Model, write_csv


def test_help_everywhere():
    for binary in (INGESTD, INGESTCTL):
        p = subprocess.run([binary, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "Usage:" in p.stdout
    p = subprocess.run([INGESTCTL, "--help"], capture_output=True, text=True)
    for cmd in ("ingest", "update", "status", "rejects", "retry", "aggregate", "--wait"):
        assert cmd in p.stdout
    p = subprocess.run([INGESTD, "--bogus"], capture_output=True, text=True)
    assert p.returncode == 64


def test_check_config_names_file_line_and_key(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('workers = 2;\nchunk_size = "lots";\n')
    p = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True, text=True)
    assert p.returncode == 78
    assert "%s:2: key 'chunk_size'" % conf in p.stderr
    conf.write_text('workers = 2;\n')
    p = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True, text=True)
    assert p.returncode == 0 and "workers = 2" in p.stdout and "configuration is valid" in p.stdout


def test_status_text_and_json(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 1000, 2)
    d = daemon().start()
    d.drop(src)
    out = d.ctl("status").stdout
    assert "p.csv" in out and "done" in out and "LOADED" in out
    # busy is as of the last heartbeat, maybe one during the load; nothing is held after it
    assert re.search(r"^%s +%d +leader +2 +\d +0 " % (re.escape(d.node), d.proc.pid), out, re.M), out
    st = json.loads(d.ctl("status", "--json").stdout)
    [f] = st["files"]
    assert f["name"] == "p.csv" and f["sha256"] == subprocess.run(
        ["sha256sum", src], capture_output=True, text=True).stdout.split()[0]
    [n] = st["nodes"]
    assert (n["node"], n["pid"], n["leader"], n["chunks_held"]) == (d.node, d.proc.pid, True, 0)
    assert 0 <= n["heartbeat_age"] < 5


def test_database_unreachable_is_a_clear_error(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text('database: { conninfo = "host=/nonexistent port=1 connect_timeout=2"; };\n')
    p = subprocess.run([INGESTCTL, "-c", str(conf), "status"], capture_output=True, text=True)
    assert p.returncode == 69 and "cannot connect to the database" in p.stderr


def test_failing_chunk_then_retry(daemon, tmp_path):
    rows = [("s%04d" % i, "Name %d" % i, "poison" if i == 700 else "fine") for i in range(1000)]
    src = str(tmp_path / "p.csv")
    write_csv(src, ["sku", "name", "description"], rows)
    d = daemon(chunk_size="4k", max_attempts=2, backoff=0.1).start()
    query(d.conninfo, "ALTER TABLE products ADD CONSTRAINT no_poison CHECK (description <> 'poison')")
    p = d.ctl("ingest", src, "--wait", "--timeout", "60", check=False)
    assert p.returncode == 1
    [f] = d.status()
    assert f["state"] == "failed"
    assert "no_poison" in f["error"] and "SQLSTATE 23514" in f["error"]
    assert "lines " in f["error"] and "failed 2 times" in f["error"]
    line = 702                          # header + 700 rows before it
    lo, hi = [int(x) for x in f["error"].split("lines ")[1].split(")")[0].split("-")]
    assert lo <= line <= hi
    assert os.path.exists(os.path.join(d.state, "failed", "%d-p.csv" % f["id"]))
    query(d.conninfo, "ALTER TABLE products DROP CONSTRAINT no_poison")
    d.ctl("retry", "p.csv")
    deadline = time.time() + 60
    while d.status()[0]["state"] != "done":
        assert time.time() < deadline, d.log_text()[-2000:]
        time.sleep(0.1)
    m = Model()
    m.ingest(src)
    assert d.products() == m.table()
    assert os.path.exists(os.path.join(d.state, "done", "%d-p.csv" % f["id"]))


def test_aggregate_command_checks_identifiers(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 3000, 4)
    d = daemon(interval=0, after_load="false").start()
    d.drop(src, wait=False)
    d.wait_log("done:")
    assert d.aggregate() == {}                 # no refresh configured
    out = d.ctl("aggregate", "--limit", "5").stdout.splitlines()
    m = Model()
    m.ingest(src)
    top = sorted(m.aggregate().items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [tuple(l.rsplit(None, 1)) for l in out] == [(n, str(c)) for n, c in top]
    assert d.aggregate() == m.aggregate()
    # sku is the key: every count is 1 and ties are ordered by value
    out = d.ctl("aggregate", "products", "sku", "--limit", "2").stdout.split()
    assert out == [min(m.products)[0], "1", sorted(m.products)[1][0], "1"]
    out = d.ctl("aggregate", "products", "name", "--limit", "1").stdout.rsplit(None, 1)
    assert (out[0], int(out[1])) == top[0]
    p = d.ctl("aggregate", "products; DROP TABLE products", "name", check=False)
    assert p.returncode == 64 and "no table" in p.stderr
    assert query(d.conninfo, "SELECT count(*) FROM products")[0][0] == len(m.products)


def test_update_with_wait_and_rejects_listing(daemon, tmp_path):
    base = str(tmp_path / "base.csv")
    write_csv(base, ["sku", "name", "description"], [("a", "A", "x")])
    upd = str(tmp_path / "u.csv")
    write_csv(upd, ["sku", "description"], [("a", "y"), ("ghost", "z")])
    d = daemon().start()
    d.drop(base)
    d.drop(upd, kind="update")
    assert d.products() == [("a", "A", "y")]
    out = d.ctl("rejects", "u.csv").stdout
    assert "unknown sku" in out and "1 rejected" in out
