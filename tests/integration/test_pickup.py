"""How files are picked up: on close after writing, on rename in, at start-up;
dotfiles and partial names are ignored; loaded files end in done/."""
import os
import time

from conftest import generate, query
from model import Model


def wait_done(d, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = d.status()
        if len([f for f in files if f["state"] in ("done", "failed")]) >= n:
            return files
        time.sleep(0.1)
    raise AssertionError("not done: %s\n%s" % (d.status(), d.log_text()[-3000:]))


def test_slow_writer_is_loaded_once_and_whole(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 3000, 2)
    data = open(src, "rb").read()
    d = daemon().start()
    with open(os.path.join(d.incoming, "slow.csv"), "wb") as f:
        for i in range(0, len(data), len(data) // 7):
            f.write(data[i:i + len(data) // 7])
            f.flush()
            time.sleep(0.3)
    files = wait_done(d, 1)
    time.sleep(1)
    assert len(d.status()) == 1
    m = Model()
    m.ingest(src)
    assert files[0]["state"] == "done" and files[0]["data_rows"] == 3000
    assert d.products() == m.table()


def test_renamed_in_and_ignored_names(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 500, 3)
    d = daemon().start()
    for name in (".hidden.csv", "x.csv.tmp", "y.csv.part"):
        with open(os.path.join(d.incoming, name), "wb") as f:
            f.write(open(src, "rb").read())
    os.rename(src, os.path.join(d.incoming, "moved.csv"))
    files = wait_done(d, 1)
    time.sleep(1)
    assert [f["name"] for f in d.status()] == ["moved.csv"]
    assert sorted(os.listdir(d.incoming)) == [".hidden.csv", "x.csv.tmp", "y.csv.part"]
    assert os.listdir(os.path.join(d.state, "done")) == ["%d-moved.csv" % files[0]["id"]]


def test_files_present_at_start_are_loaded_in_order(daemon, tmp_path):
    d = daemon()
    os.makedirs(d.incoming)
    os.makedirs(d.updates)
    a = generate(tmp_path / "a.csv", 800, 1)
    b = generate(tmp_path / "b.csv", 800, 2)
    for i, (src, folder) in enumerate(((a, d.incoming), (b, d.incoming))):
        dst = os.path.join(folder, os.path.basename(src))
        os.rename(src, dst)
        os.utime(dst, (time.time() - 100 + i, time.time() - 100 + i))
    d.start()
    files = wait_done(d, 2)
    assert [f["name"] for f in files] == ["a.csv", "b.csv"]   # oldest first
    m = Model()
    m.ingest(os.path.join(d.state, "done", "%d-a.csv" % files[0]["id"]))
    m.ingest(os.path.join(d.state, "done", "%d-b.csv" % files[1]["id"]))
    assert d.products() == m.table()
    assert query(d.conninfo, "SELECT count(*) FROM ingest.files WHERE state <> 'done'")[0][0] == 0


def test_fresh_file_at_start_waits_for_its_writer(daemon, tmp_path):
    d = daemon()
    os.makedirs(d.incoming)
    src = generate(tmp_path / "p.csv", 300, 9)
    os.rename(src, os.path.join(d.incoming, "fresh.csv"))   # mtime now: maybe still written
    d.start()
    files = wait_done(d, 1, timeout=30)                       # picked up by the deferred rescan
    assert files[0]["name"] == "fresh.csv" and files[0]["state"] == "done"


def test_odd_file_names(daemon, tmp_path):
    d = daemon().start()
    src = generate(tmp_path / "p.csv", 50, 3)
    data = open(src, "rb").read()
    names = [b"with space.csv", b"new\nline.csv", b"latin\xe9.csv"]
    for n in names:
        with open(os.path.join(d.incoming.encode(), b"." + n), "wb") as f:
            f.write(data)
        os.rename(os.path.join(d.incoming.encode(), b"." + n), os.path.join(d.incoming.encode(), n))
    files = wait_done(d, 3)
    assert sorted(f["name"] for f in files) == sorted(["with space.csv", "new\\x0aline.csv", "latin\\xe9.csv"])
    assert all(f["state"] == "done" for f in files)
    assert len(os.listdir(os.path.join(d.state, "done"))) == 3


def vm_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith(field + ":")).split()[1])


def test_ten_thousand_files_at_start(daemon, tmp_path):
    """10,000 files waiting in incoming/ at start: registered in arrival
    order (mtime, then name; the test's own shuffle), a file dropped while
    they are being registered comes after all of them, the supervisor's
    memory stays flat, the loads go in that order and a stop is prompt."""
    import random
    n = 10000
    d = daemon()
    os.makedirs(d.incoming)
    rng = random.Random(7)
    ages = list(range(n))
    rng.shuffle(ages)
    base = time.time() - 10 * n
    arrival = []
    for i in range(n):
        name = "f%05d.csv" % i
        path = os.path.join(d.incoming, name)
        with open(path, "w") as f:
            f.write("sku,name,description\nS%05d,Name %d,d\n" % (i, i % 10))
        mtime = base + ages[i] * 5                         # distinct seconds, shuffled against the names
        os.utime(path, (mtime, mtime))
        arrival.append((mtime, name))
    arrival.sort()
    d.start()
    ready_kb = vm_kb(d.proc.pid, "VmHWM")
    late = os.path.join(str(tmp_path), "late.csv")
    with open(late, "w") as f:
        f.write("sku,name,description\nLATE,Late,d\n")
    os.rename(late, os.path.join(d.incoming, "late.csv"))
    deadline = time.time() + 240
    while query(d.conninfo, "SELECT count(*) FROM ingest.files")[0][0] < n + 1:
        assert time.time() < deadline, d.log_text()[-3000:]
        assert d.proc.poll() is None
        time.sleep(0.5)
    names = [r[0] for r in query(d.conninfo, "SELECT name FROM ingest.files ORDER BY id")]
    assert names == [name for _, name in arrival] + ["late.csv"]
    grown = vm_kb(d.proc.pid, "VmHWM") - ready_kb
    print("supervisor peak RSS at ready %d kB, grew by %d kB over %d registrations" % (ready_kb, grown, n))
    assert grown < 16 * 1024, grown
    time.sleep(5)
    done = query(d.conninfo, "SELECT id FROM ingest.files WHERE state = 'done' ORDER BY finished_at, id")
    assert len(done) > 0 and [i for i, in done] == list(range(1, len(done) + 1))
    t = time.time()
    d.stop()
    assert time.time() - t < 30
