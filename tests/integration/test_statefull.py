"""A full filesystem under the state folder fails no file: with 300 files
waiting and the filesystem full (a loop-mounted ext4: renames that need a new
directory block fail with ENOSPC), the files wait where they are, the log
says so once, and once space is freed every file loads, in arrival order,
and ends in done/, the tables equal to the model."""
import os
import subprocess
import time

import pytest

from conftest import Daemon, query
from model import Model, write_csv


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the state-folder-full test needs root to loop-mount a filesystem")
    img, mnt = str(tmp_path / "fs.img"), str(tmp_path / "fs")
    subprocess.run(["truncate", "-s", "8M", img], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "1024", img], check=True)
    os.mkdir(mnt)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    yield mnt
    subprocess.run(["umount", "-l", mnt])


def fill(path):
    """Writes a ballast file until the filesystem has no block left."""
    ballast = os.path.join(path, "ballast")
    with open(ballast, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1 << 10):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return ballast


def test_full_state_filesystem_delays_and_loses_nothing(db, small_fs, tmp_path):
    d = Daemon(small_fs, db, chunk_size="64k")
    d.log_path = str(tmp_path / "ingestd.log")             # the log on a disk with room
    os.makedirs(d.incoming)
    os.makedirs(d.updates)
    arrival = []
    for i in range(300):
        name = "f%03d.csv" % i
        path = os.path.join(d.incoming, name)
        write_csv(path, ["sku", "name", "description"], [("s%03d" % (i % 120), "N%d" % (i % 7), "d%d" % i)])
        mtime = time.time() - 1000 + (i * 37) % 300         # arrival order differs from the names'
        os.utime(path, (mtime, mtime))
        arrival.append((mtime, name))
    arrival.sort()
    os.makedirs(os.path.join(d.state, "processing"))
    for sub in ("done", "failed"):
        os.makedirs(os.path.join(d.state, sub))
    ballast = fill(small_fs)
    d.start()
    time.sleep(8)
    log = d.log_text()
    registered = query(db, "SELECT count(*) FROM ingest.files")[0][0]
    assert registered < 300, registered                       # the full filesystem holds them up
    assert "the state folder's filesystem is full" in log, log[-3000:]
    assert log.count("the state folder's filesystem is full") == 1, log[-3000:]
    assert query(db, "SELECT count(*) FROM ingest.files WHERE state = 'failed'")[0][0] == 0
    assert len(os.listdir(d.incoming)) > 0                  # still waiting
    os.unlink(ballast)
    deadline = time.time() + 180
    while query(db, "SELECT count(*) FROM ingest.files WHERE state = 'done'")[0][0] < 300:
        assert time.time() < deadline, d.log_text()[-3000:]
        time.sleep(0.5)
    while len(os.listdir(os.path.join(d.state, "done"))) < 300:
        assert time.time() < deadline, (os.listdir(os.path.join(d.state, "processing")), d.log_text()[-3000:])
        time.sleep(0.5)
    names = [r[0] for r in query(db, "SELECT name FROM ingest.files ORDER BY id")]
    assert names == [n for _, n in arrival]
    m = Model()
    for _, n in arrival:
        m.ingest(os.path.join(d.state, "done", next(f for f in os.listdir(os.path.join(d.state, "done"))
                                                      if f.endswith("-" + n))))
    assert d.products() == m.table()
    assert os.listdir(os.path.join(d.state, "processing")) == [] and os.listdir(d.incoming) == []
    d.stop()
