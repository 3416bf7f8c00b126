"""A full disk fails no file: products lives in a tablespace on a small
tmpfs that fills mid-load (SQLSTATE 53100); the chunks wait with backoff for
longer than retry.max_attempts would allow, the log says so once, STATUS
says so, and once space is freed the load completes equal to the model."""
import os
import re
import socket
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import generate, query
from model import Model

MB = 1 << 20


@pytest.fixture
def small_disk():
    if os.geteuid() != 0:
        pytest.fail("the disk-full test needs root to mount a tmpfs")
    path = "/run/ingestd-full-%d" % os.getpid()
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", path], check=True)
    ts = os.path.join(path, "ts")
    os.mkdir(ts)
    subprocess.run(["chown", "postgres:postgres", ts], check=True)
    yield path
    subprocess.run(["umount", "-l", path])
    os.rmdir(path)


def fill(path, leave):
    """A ballast file that leaves `leave` bytes free on path's filesystem."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    ballast = os.path.join(path, "ballast")
    with open(ballast, "wb") as f:
        left = free - leave
        while left > 0:
            n = min(left, 4 * MB)
            f.write(b"\0" * n)
            left -= n
    return ballast


class NotifySocket:
    """A NOTIFY_SOCKET read all the time, as systemd does: sd_notify blocks
    once a few datagrams are queued unread."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.statuses, self.running = [], True
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while self.running:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.statuses += [l[7:] for l in msg.splitlines() if l.startswith("STATUS=")]

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def test_database_disk_full_mid_load_waits_then_completes(daemon, pg, small_disk, tmp_path, monkeypatch):
    notify = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    d = daemon(chunk_size="64k", backoff=0.2, max_attempts=3).start()
    first = generate(tmp_path / "first.csv", 1000, 1)
    d.drop(first)                                   # products exists and is keyed
    name = "full_%d" % os.getpid()
    admin = psycopg2.connect(pg)
    admin.autocommit = True
    admin.cursor().execute("CREATE TABLESPACE %s LOCATION '%s/ts'" % (name, small_disk))
    try:
        c = psycopg2.connect(d.conninfo)
        c.autocommit = True
        for idx, in query(d.conninfo, "SELECT indexname FROM pg_indexes WHERE tablename = 'products'"):
            c.cursor().execute("ALTER INDEX %s SET TABLESPACE %s" % (idx, name))
        c.cursor().execute("ALTER TABLE products SET TABLESPACE %s" % name)
        c.close()
        ballast = fill(small_disk, 2 * MB)
        src = generate(tmp_path / "big.csv", 40000, 2)  # about 9 MB in products: it cannot fit
        d.drop(src, wait=False)
        d.wait_log("out of disk space", timeout=120)
        # longer than 3 attempts at 0.2 s backoff would last: the file must stay loading
        time.sleep(6)
        assert query(d.conninfo, "SELECT state FROM ingest.files ORDER BY id") == [("done",), ("loading",)]
        assert any(st.startswith("waiting for disk space") for st in notify.statuses), notify.statuses[-20:]
        log = d.log_text()
        assert log.count("out of disk space") == 1, log[-3000:]
        assert "53100" in log and not re.search(r"worker: chunk \d+: could not extend", log)
        os.unlink(ballast)
        deadline = time.time() + 180
        while query(d.conninfo, "SELECT state FROM ingest.files WHERE id = 2")[0][0] != "done":
            assert time.time() < deadline, d.log_text()[-3000:]
            time.sleep(0.2)
        d.wait_log("disk space again")
        assert query(d.conninfo, "SELECT max(attempts) FROM ingest.chunks WHERE file_id = 2")[0][0] <= 2
        m = Model()
        m.ingest(first)
        m.ingest(src)
        assert query(d.conninfo, "SELECT sku, name, description FROM products ORDER BY sku") == m.table()
        assert not os.listdir(os.path.join(d.state, "failed"))
    finally:
        d.stop()
        notify.close()
        c = psycopg2.connect(d.conninfo)
        c.autocommit = True
        c.cursor().execute("DROP TABLE IF EXISTS products CASCADE")
        c.close()
        admin.cursor().execute("DROP TABLESPACE IF EXISTS %s" % name)
        admin.close()
