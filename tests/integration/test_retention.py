"""Retention (retention.history, retention.done_files, ingestctl prune):
what a done file leaves behind goes when it is old, its ingest.files row and
totals stay, a failed file keeps everything, and a prune never holds up a
load. Counts are compared with what the database held before the prune."""
import os
import re
import signal
import subprocess
import time

import psycopg2

from conftest import INGESTD, generate, query
from model import write_csv


def retention_conf(history="0", done_files="0"):
    return 'retention: { history = "%s"; done_files = "%s"; };\n' % (history, done_files)


def with_rejects(path, rows, bad_every, seed=0):
    """rows rows, every bad_every-th with a field too many: rejected."""
    out = []
    for i in range(rows):
        out.append(("k%d-%06d" % (seed, i), "Name %d" % (i % 13), "d%d" % i) +
                   (("extra",) if i % bad_every == 0 else ()))
    write_csv(path, ["sku", "name", "description"], out)
    return str(path)


def history(conninfo):
    """{file id: (chunk rows, reject rows)}"""
    return {f: (c, r) for f, c, r in query(
        conninfo, "SELECT f.id, (SELECT count(*) FROM ingest.chunks WHERE file_id = f.id), "
                  "(SELECT count(*) FROM ingest.rejects WHERE file_id = f.id) FROM ingest.files f")}


def totals(conninfo):
    return query(conninfo, "SELECT id, state, rows_loaded, rows_rejected, rows_superseded, chunks "
                           "FROM ingest.files ORDER BY id")


def wait_for(cond, what, d, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out waiting for %s\n%s" % (what, d.log_text()[-3000:])
        time.sleep(0.1)


def load_done_and_failed(d, tmp_path):
    good = with_rejects(tmp_path / "good.csv", 3000, 100)          # 30 rejects: 1%, within 5%
    d.drop(good)
    bad = with_rejects(tmp_path / "bad.csv", 1000, 5)              # 20% rejected: fails
    p = d.ctl("ingest", bad, "--wait", check=False)
    assert p.returncode == 1, p.stderr
    return good


def test_history_pruned_totals_kept_failed_file_untouched(daemon, tmp_path):
    d = daemon(chunk_size="16k", max_ratio=0.05, extra=retention_conf()).start()
    good = load_done_and_failed(d, tmp_path)
    before, sums = history(d.conninfo), totals(d.conninfo)
    assert before[1][0] > 3 and before[1][1] == 30 and before[2][1] > 0
    status_before = {f["id"]: f for f in __import__("json").loads(d.ctl("status", "--json").stdout)["files"]}
    out = d.ctl("prune", "--dry-run").stdout
    assert "would remove: the history of 0 done files" in out and "everything is kept" in out
    # a dry run with the setting counts exactly the done file's rows, and removes nothing
    d.write_config(chunk_size="16k", max_ratio=0.05, extra=retention_conf(history="1s"))
    time.sleep(1.1)
    out = d.ctl("prune", "--dry-run").stdout
    assert "would remove: the history of 1 done files (%d chunk rows, %d reject rows)" % before[1] in out, out
    assert history(d.conninfo) == before
    d.proc.send_signal(signal.SIGHUP)                              # retention.* reload
    d.wait_log("retention: history of 1 done files removed (%d chunk rows, %d reject rows)" % before[1])
    after = history(d.conninfo)
    assert after[1] == (0, 0) and after[2] == before[2], (before, after)
    assert totals(d.conninfo) == sums
    assert query(d.conninfo, "SELECT pruned_at IS NOT NULL FROM ingest.files ORDER BY id") == [(True,), (False,)]
    st = {f["id"]: f for f in __import__("json").loads(d.ctl("status", "--json").stdout)["files"]}
    for key in ("chunks_done", "rows_loaded", "rows_rejected", "rows_superseded"):
        assert st[1][key] == status_before[1][key], key
    rej = d.ctl("rejects", "good.csv").stdout
    assert "the file had 30; their rows were removed by retention.history" in rej
    assert os.path.exists(os.path.join(d.state, "done", "1-good.csv"))      # done_files = 0 keeps it
    # a second prune finds nothing: the log line is not repeated
    time.sleep(2.5)
    assert d.log_text().count("retention: history of") == 1
    assert d.products() and len(d.products()) == query(d.conninfo, "SELECT rows_loaded FROM ingest.files "
                                                                   "WHERE id = 1")[0][0]


def test_done_files_deleted_failed_kept_and_prune_command(daemon, tmp_path):
    d = daemon(chunk_size="16k", max_ratio=0.05, extra=retention_conf()).start()
    good = load_done_and_failed(d, tmp_path)
    size = os.path.getsize(good)
    d.stop()
    d.write_config(chunk_size="16k", max_ratio=0.05, extra=retention_conf(done_files="1s"))
    time.sleep(1.1)
    assert "would remove: the history of 0 done files (0 chunk rows, 0 reject rows); 1 files in done/ " \
           "(%d bytes)" % size in d.ctl("prune", "--dry-run").stdout
    out = d.ctl("prune").stdout
    assert out.startswith("removed: the history of 0 done files (0 chunk rows, 0 reject rows); 1 files in done/ "
                          "(%d bytes)" % size), out
    assert os.listdir(os.path.join(d.state, "done")) == []
    assert os.listdir(os.path.join(d.state, "failed")) == ["2-bad.csv"]
    assert query(d.conninfo, "SELECT id FROM ingest.files WHERE removed_at IS NOT NULL") == [(1,)]
    assert "0 files in done/" in d.ctl("prune").stdout
    # a new file loads, and its copy goes a second after it is done (the daemon's own prune)
    d.start()
    d.drop(generate(tmp_path / "next.csv", 500))
    wait_for(lambda: os.listdir(os.path.join(d.state, "done")) == [], "next.csv to leave done/", d)
    d.wait_log("1 files deleted from done/")


def test_young_files_are_kept(daemon, tmp_path):
    d = daemon(extra=retention_conf(history="1h", done_files="1d")).start()
    d.drop(generate(tmp_path / "y.csv", 500))
    out = d.ctl("prune").stdout
    assert "removed: the history of 0 done files (0 chunk rows, 0 reject rows); 0 files in done/" in out
    assert query(d.conninfo, "SELECT count(*) FROM ingest.chunks")[0][0] > 0


def test_a_stalled_prune_holds_up_no_load(daemon, tmp_path):
    """A session holds a lock on a row the prune must delete: the prune waits
    in its transaction, and meanwhile a new file loads and finishes."""
    d = daemon(chunk_size="16k", extra=retention_conf()).start()
    d.drop(generate(tmp_path / "old.csv", 3000))
    blocker = psycopg2.connect(d.conninfo)
    cur = blocker.cursor()
    cur.execute("SELECT * FROM ingest.chunks WHERE file_id = 1 AND no = 1 FOR UPDATE")
    try:
        d.write_config(chunk_size="16k", extra=retention_conf(history="1s"))
        time.sleep(1.1)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: query(d.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                           "AND query LIKE '%DELETE FROM ingest.chunks%'")[0][0] == 1,
                 "the prune to wait for the row lock", d)
        d.drop(generate(tmp_path / "new.csv", 3000, 2))            # waits for done and the aggregate
        assert query(d.conninfo, "SELECT state, pruned_at IS NULL FROM ingest.files WHERE id = 2") == [("done", True)]
    finally:
        blocker.rollback()
        blocker.close()
    d.wait_log("retention: history of 1 done files removed")


def test_retention_settings_are_checked(tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text('retention: { history = "3x"; };\n')
    p = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True, text=True)
    assert p.returncode == 78 and "%s:1: key 'retention.history': expected a duration" % conf in p.stderr, p.stderr
    conf.write_text('retention: { history = 86400; done_files = "12h"; };\n')
    p = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True, text=True)
    assert p.returncode == 0
    assert re.search(r'^retention\.history = "1d"', p.stdout, re.M), p.stdout
    assert re.search(r'^retention\.done_files = "12h"', p.stdout, re.M), p.stdout
    conf.write_text("")
    p = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True, text=True)
    assert re.search(r'^retention\.history = "30d"', p.stdout, re.M) and \
        re.search(r'^retention\.done_files = "0"', p.stdout, re.M), p.stdout
