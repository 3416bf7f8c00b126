"""tests/corpus: every bad or odd input has its expected outcome (EXPECTED.json):
no crash, a clear message, nothing lost. Plus the inputs that cannot live in
git: a 2 GB sparse file, a symlink, a FIFO, a directory, an unreadable file."""
import json
import os
import shutil
import stat
import subprocess
import time

from conftest import APPLY_PATHS, NO_DAC, ROOT, apply_paths, assert_apply_path, query

CORPUS = os.path.join(ROOT, "tests", "corpus")


def drop(d, name, src=None, data=None):
    tmp = os.path.join(d.incoming, ".tmp-" + name.replace("/", "_"))
    if src:
        shutil.copyfile(src, tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
    os.rename(tmp, os.path.join(d.incoming, name))


def wait_all(d, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = d.status()
        if len([f for f in files if f["state"] in ("done", "failed")]) >= n:
            return {f["name"]: f for f in files}
        assert d.proc.poll() is None, d.log_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("not all files finished: %s" % [(f["name"], f["state"]) for f in d.status()])


@apply_paths
def test_corpus_outcomes(daemon, path):
    expected = json.load(open(os.path.join(CORPUS, "EXPECTED.json")))
    assert len(expected) >= 30
    d = daemon(max_ratio=0.5, chunk_size="100", extra=APPLY_PATHS[path]).start(debug=True)
    for name in sorted(expected):
        drop(d, name, src=os.path.join(CORPUS, name))
    files = wait_all(d, len(expected))
    for name, exp in expected.items():
        f = files[name]
        assert f["state"] == exp["state"], (name, f)
        if exp["state"] == "failed":
            assert exp["error"] in f["error"], (name, f["error"])
            assert "%d-%s failed: " % (f["id"], name) in d.log_text(), name
            continue
        rejects = query(d.conninfo, "SELECT line, reason FROM ingest.rejects WHERE file_id = %s ORDER BY line",
                        (f["id"],))
        assert len(rejects) == len(exp["rejected"]), (name, rejects)
        for (line, reason), (eline, ereason) in zip(rejects, exp["rejected"]):
            assert line == eline and ereason in reason, (name, rejects)
        assert (f["rows_loaded"], f["rows_superseded"]) == (exp["loaded"], exp["superseded"]), (name, f)
        assert f["rows_loaded"] + f["rows_rejected"] + f["rows_superseded"] == f["data_rows"], name
    assert os.listdir(os.path.join(d.state, "processing")) == []
    assert d.proc.poll() is None                     # no crash
    assert_apply_path(d, path)


def test_files_that_cannot_be_committed(daemon, tmp_path):
    d = daemon()
    os.makedirs(d.incoming)
    os.makedirs(d.updates)
    sparse = os.path.join(d.incoming, ".sparse")
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)                          # 2 GB of holes
    os.rename(sparse, os.path.join(d.incoming, "sparse-2g.csv"))
    target = tmp_path / "target.csv"
    target.write_text("sku,name\na,b\n")
    os.symlink(str(target), os.path.join(d.incoming, "symlink.csv"))
    os.mkfifo(os.path.join(d.incoming, "fifo.csv"))
    os.mkdir(os.path.join(d.incoming, "directory.csv"))
    drop(d, "unreadable.csv", data=b"sku,name\na,b\n")
    os.chmod(os.path.join(d.incoming, "unreadable.csv"), 0)
    past = time.time() - 60                           # not "maybe still being written"
    for name in os.listdir(d.incoming):
        os.utime(os.path.join(d.incoming, name), (past, past), follow_symlinks=False)
    d.start(prefix=NO_DAC)                            # the start-up rescan sees all of them
    t0 = time.time()
    files = wait_all(d, 5)
    assert time.time() - t0 < 60
    expect = {"sparse-2g.csv": "binary file", "symlink.csv": "symbolic link", "fifo.csv": "FIFO",
              "directory.csv": "directory", "unreadable.csv": "Permission denied"}
    for name, msg in expect.items():
        assert files[name]["state"] == "failed" and msg in files[name]["error"], files[name]
    assert target.read_text() == "sku,name\na,b\n"     # a symlink's target is never touched
    failed = os.listdir(os.path.join(d.state, "failed"))
    assert len(failed) == 5 and os.listdir(d.incoming) == []
    assert stat.S_ISFIFO(os.lstat(os.path.join(d.state, "failed", "%d-fifo.csv" % files["fifo.csv"]["id"])).st_mode)
