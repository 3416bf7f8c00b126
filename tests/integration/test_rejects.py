"""Bad rows go to ingest.rejects with file, line, offset and reason while the
rest loads; bad files fail with one clear message; nothing is lost."""
import os
import random

from conftest import query

BAD = [
    (b"good-1,Ann,ok\r\n", None),
    (b"bad-fields,Bob\r\n", "expected 3 fields, found 2"),
    (b"good-2,Cat,\"multi\nline, with \"\"quotes\"\"\"\r\n", None),
    (b",Dan,empty sku\r\n", "empty sku"),
    (b"   ,Eve,blank sku\r\n", "empty sku"),
    (b"nul-\x00,Fay,x\r\n", "NUL byte"),
    (b"utf-\xff\xfe,Gus,x\r\n", "invalid UTF-8"),
    (b"long,Hal," + b"x" * 300 + b"\r\n", "field longer than limits.max_field"),
    (b"quote,I\"an,x\r\n", "stray quote"),
    (b"too,many,fields,here\r\n", "expected 3 fields, found 4"),
    (b"\r\n", "blank"),
    (b"good-3,Jo,last\r\n", None),
    (b"\"unterminated,Kim,x\r\ngood-4,Lee,swallowed\r\n", "unterminated quoted field"),
]

BOTH_LAYOUTS = True   # products as one table and partitioned (conftest.LAYOUTS)


def build(path):
    data, expected, line, offset = b"sku,name,description\r\n", [], 2, None
    for rec, reason in BAD:
        offset = len(data)
        if reason and reason != "blank":
            expected.append((line, offset, reason))
        data += rec
        line += rec.count(b"\n")
    with open(path, "wb") as f:
        f.write(data)
    return expected


def test_bad_rows_are_rejected_with_position_and_reason(daemon, tmp_path):
    src = str(tmp_path / "bad.csv")
    expected = build(src)
    d = daemon(max_field=200, max_ratio=0.9, chunk_size="1").start()
    d.drop(src)
    got = query(d.conninfo, "SELECT line, byte_offset, reason, raw FROM ingest.rejects ORDER BY line")
    assert [(g[0], g[1]) for g in got] == [(e[0], e[1]) for e in expected]
    for g, e in zip(got, expected):
        assert e[2] in g[2], (g, e)
    raw = open(src, "rb").read()
    for g in got:                              # raw is the record as in the file
        assert raw[g[1]:g[1] + len(bytes(g[3]))] == bytes(g[3])
    assert d.products() == [("good-1", "Ann", "ok"), ("good-2", "Cat", 'multi\nline, with "quotes"'),
                            ("good-3", "Jo", "last")]
    [f] = d.status()
    assert f["state"] == "done"
    assert (f["rows_loaded"], f["rows_rejected"], f["rows_superseded"]) == (3, len(expected), 0)
    assert f["data_rows"] == 3 + len(expected)
    out = d.ctl("rejects", "bad.csv").stdout
    assert "empty sku" in out and "unterminated" in out and str(expected[0][0]) in out
    assert "%d rejected" % len(expected) in out


def test_reject_ratio_fails_the_file_but_keeps_the_count(daemon, tmp_path):
    src = str(tmp_path / "half.csv")
    with open(src, "w") as f:
        f.write("sku,name\n")
        for i in range(100):
            f.write("s%d,N%d\n" % (i, i) if i % 2 else ",empty\n")
    d = daemon(max_ratio=0.1).start()
    p = d.ctl("ingest", src, "--wait", "--timeout", "60", check=False)
    assert p.returncode == 1 and "above rejects.max_ratio" in p.stderr
    [f] = d.status()
    assert f["state"] == "failed"
    assert "above rejects.max_ratio" in f["error"]
    assert f["rows_rejected"] == 50 and f["rows_loaded"] == 50
    assert os.path.exists(os.path.join(d.state, "failed", "%d-half.csv" % f["id"]))


def drop_raw(d, name, data):
    tmp = os.path.join(d.incoming, "." + name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(d.incoming, name))


BAD_FILES = {
    "empty.csv": (b"", "empty file"),
    "header-only.csv": (b"sku,name,description\r\n", "no data rows"),
    "no-sku.csv": (b"name,description\r\nA,b\r\n", "no 'sku' column"),
    "binary.bin": (bytes(random.Random(5).getrandbits(8) for _ in range(1)) + random.Random(5).randbytes(5000), "binary file"),
}


def test_bad_files_fail_with_one_clear_message(daemon, tmp_path):
    d = daemon().start()
    for name, (data, _) in BAD_FILES.items():
        drop_raw(d, name, data)
    for name in BAD_FILES:
        d.wait_log("%s failed" % name)
    files = {f["name"]: f for f in d.status()}
    for name, (_, msg) in BAD_FILES.items():
        f = files[name]
        assert f["state"] == "failed" and msg in f["error"], f
        assert os.path.exists(os.path.join(d.state, "failed", "%d-%s" % (f["id"], name)))
        assert d.log_text().count("%s failed: " % ("%d-%s" % (f["id"], name))) == 1
    assert os.listdir(d.incoming) == [] and os.listdir(os.path.join(d.state, "processing")) == []


def test_non_regular_files_are_moved_aside(daemon, tmp_path):
    d = daemon().start()
    target = tmp_path / "elsewhere.csv"
    target.write_text("sku,name\na,b\n")
    os.symlink(str(target), os.path.join(d.incoming, "link.csv"))
    os.mkdir(os.path.join(d.incoming, "adir"))
    os.mkfifo(os.path.join(d.incoming, "fifo.csv"))
    d.stop()
    d.start()                       # the start-up rescan sees all three
    d.wait_log("fifo.csv: not a regular file")
    files = {f["name"]: f for f in d.status()}
    assert "symbolic link" in files["link.csv"]["error"]
    assert "directory" in files["adir"]["error"]
    assert "FIFO" in files["fifo.csv"]["error"]
    assert target.exists()
    assert sorted(os.listdir(os.path.join(d.state, "failed"))) == sorted(
        "%d-%s" % (f["id"], f["name"]) for f in files.values())
