"""ingestd under a real systemd: the host's / booted as a throwaway container
(systemd-nspawn --volatile=yes, recipe in shared/docs/TESTING.md) with the
build installed under /opt/ingestd, checked as a user would: start, drop a
file, journalctl, reload, stop mid-load and restart, kill, watchdog."""
import json
import os
import shutil
import signal
import subprocess
import time

import psycopg2
import pytest

from conftest import GEN, ROOT, free_port, generate, query
from model import Model

STAGE_BUILD = os.path.join(ROOT, "build", "sd")
STAGE = os.path.join(ROOT, "build", "sd-stage")
# not under /tmp (nor /var/tmp): the unit has PrivateTmp=, and a clone may live in /tmp
WORK = "/run/ingestd-sdtest-%d" % os.getpid()


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def install_stage():
    os.makedirs(STAGE_BUILD, exist_ok=True)
    if not os.path.exists(os.path.join(STAGE_BUILD, "Makefile")):
        sh(os.path.join(ROOT, "configure"), "-q", "--prefix=/opt/ingestd", "--sysconfdir=/etc",
           cwd=STAGE_BUILD)
    sh("make", "-s", "-j2", cwd=STAGE_BUILD)
    shutil.rmtree(STAGE, ignore_errors=True)
    sh("make", "-s", "install", "DESTDIR=" + STAGE, cwd=STAGE_BUILD)


class Container:
    """The host's / booted by systemd-nspawn. binds: nspawn options that
    bring in what is tested (by default the staged build under /opt and its
    unit); volatile: "yes" (a tmpfs root, /usr from the host read-only; an
    --overlay= in binds makes a folder writable, the writes thrown away)."""

    def __init__(self, conninfo, binds=None, volatile="yes"):
        self.name = "ingestd-test-%d" % os.getpid()
        self.etc = os.path.join(WORK, "etc")
        os.makedirs(self.etc, exist_ok=True)
        self.conninfo = conninfo
        unit = os.path.join(STAGE, "opt/ingestd/lib/systemd/system/ingestd.service")
        if binds is None:
            binds = ("--bind-ro=%(stage)s/opt/ingestd:/opt/ingestd --bind-ro=%(unit)s:/etc/systemd/system/"
                     "ingestd.service --bind-ro=%(etc)s:/etc/ingestd" % dict(stage=STAGE, unit=unit, etc=self.etc))
        script = """
for h in systemd unified; do mkdir -p /sys/fs/cgroup/$h/%(name)s
  echo $$ > /sys/fs/cgroup/$h/%(name)s/cgroup.procs; done
exec systemd-nspawn -D / --volatile=%(volatile)s -M ingestdtest --register=no --keep-unit \
  --private-network --console=passive %(binds)s \
  --bind=%(work)s:%(work)s --bind-ro=/etc/manpath.config --boot systemd.firstboot=off
""" % dict(name=self.name, binds=binds, volatile=volatile, work=WORK)
        self.log = open(os.path.join(WORK, "nspawn.log"), "w")
        self.proc = subprocess.Popen(["bash", "-c", script], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self.pid = self.wait_systemd()
        except AssertionError:
            self.proc.kill()
            raise
        # the container has no network: do not let network-online.target wait for it
        self.run("systemctl", "mask", "systemd-networkd-wait-online.service", check=False)
        self.run("systemctl", "daemon-reload")

    def install_staged_user_and_folders(self):
        self.run("systemd-sysusers", "/opt/ingestd/lib/sysusers.d/ingestd.conf")
        self.run("systemd-tmpfiles", "--create", "/opt/ingestd/lib/tmpfiles.d/ingestd.conf")

    def wait_systemd(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-f", "systemd-nspawn"],
                                  capture_output=True, text=True).stdout.split()
            for nspawn in kids + [str(self.proc.pid)]:
                inner = subprocess.run(["pgrep", "-P", nspawn], capture_output=True, text=True).stdout.split()
                for pid in inner:
                    if open("/proc/%s/comm" % pid).read().strip() == "systemd":
                        state = subprocess.run(["nsenter", "-t", pid, "-a", "systemctl", "is-system-running"],
                                               capture_output=True, text=True).stdout.strip()
                        if state in ("starting", "running", "degraded"):
                            return int(pid)
            time.sleep(0.2)
        raise AssertionError("container did not boot: " + open(self.log.name).read()[-2000:])

    def run(self, *cmd, check=True, timeout=120):
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-a"] + list(cmd), capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s: %s %s" % (cmd, p.stdout, p.stderr))
        return p

    def path(self, p):
        return "/proc/%d/root%s" % (self.pid, p)

    def prop(self, name):
        return self.run("systemctl", "show", "-P", name, "ingestd").stdout.strip()

    def journal(self, *match):
        out = self.run("journalctl", "-u", "ingestd", "-o", "json", "--no-pager", *match).stdout
        return [json.loads(l) for l in out.splitlines() if l.strip()]

    def write_config(self, **kv):
        # many small chunks: stop and restart must land in the middle of a load
        settings = dict(workers=2, chunk_size='"256k"', max_ranges=1000,
                        aggregate='{ interval = 60; after_load = true; }')
        settings.update(kv)
        with open(os.path.join(self.etc, "ingestd.conf.tmp"), "w") as f:
            f.write('database: { conninfo = "%s"; };\n' % self.conninfo)
            for k, v in settings.items():
                v = str(v)
                f.write("%s = %s;\n" % (k, v) if not v.startswith("{") else "%s: %s;\n" % (k, v))
        os.rename(os.path.join(self.etc, "ingestd.conf.tmp"), os.path.join(self.etc, "ingestd.conf"))

    def drop(self, src, name):
        incoming = self.path("/var/lib/ingestd/incoming")
        shutil.copy(src, os.path.join(incoming, "." + name))
        os.chmod(os.path.join(incoming, "." + name), 0o644)
        os.rename(os.path.join(incoming, "." + name), os.path.join(incoming, name))

    def wait_active(self, timeout=30):
        deadline = time.time() + timeout
        while self.prop("ActiveState") != "active":
            assert time.time() < deadline, self.run("systemctl", "status", "ingestd", check=False).stdout
            time.sleep(0.2)

    def poweroff(self):
        self.run("systemctl", "poweroff", check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for h in ("systemd", "unified"):
            top = "/sys/fs/cgroup/%s/%s" % (h, self.name)
            for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def box():
    if os.geteuid() != 0 or not shutil.which("systemd-nspawn"):
        pytest.fail("the systemd suite needs root and systemd-nspawn (apt-get install systemd-container)")
    install_stage()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    os.chmod(WORK, 0o755)
    pgdir = os.path.join(WORK, "pg")
    admin = sh(os.path.join(ROOT, "tools", "pgcluster"), "start", pgdir, str(free_port())).stdout.strip()
    c = Container(admin.replace("dbname=postgres", "dbname=sd"))
    c.install_staged_user_and_folders()
    c.admin = admin
    try:
        yield c
    finally:
        c.poweroff()
        subprocess.run([os.path.join(ROOT, "tools", "pgcluster"), "stop", pgdir, "immediate"])
        shutil.rmtree(WORK, ignore_errors=True)


def wait_file_state(conninfo, name, state, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            rows = query(conninfo, "SELECT state FROM ingest.files WHERE name = %s", (name,))
        except psycopg2.Error:
            rows = None
        if rows and rows[0][0] == state:
            return
        time.sleep(0.2)
    raise AssertionError("%s never reached %s" % (name, state))


def test_unit_checks_offline():
    unit = os.path.join(STAGE_BUILD, "systemd", "ingestd.service")
    if not os.path.exists(unit):
        install_stage()
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", unit],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:]
    exposure = float(p.stdout.split("Overall exposure level for ingestd.service:")[1].split()[0])
    assert exposure <= 2.0


def test_start_becomes_active_only_when_database_is_ready(box):
    box.write_config()
    p = box.run("env", "MANPATH=/opt/ingestd/share/man", "systemd-analyze", "verify",
                "ingestd.service")
    assert p.stderr.strip() == "", p.stderr
    box.run("systemctl", "start", "--no-block", "ingestd")
    time.sleep(3)                              # database "sd" does not exist yet
    assert box.prop("ActiveState") == "activating", box.run("journalctl", "-u", "ingestd", "--no-pager", check=False).stdout[-3000:]
    assert "waiting for the database" in box.prop("StatusText")
    c = psycopg2.connect(box.admin)
    c.autocommit = True
    c.cursor().execute("CREATE DATABASE sd")
    c.close()
    box.wait_active()
    assert box.prop("StatusText") == "idle"


def test_dropped_file_loads_and_journal_has_fields(box, tmp_path):
    src = generate(tmp_path / "p.csv", 20000, 3)
    box.drop(src, "products.csv")
    wait_file_state(box.conninfo, "products.csv", "done")
    m = Model()
    m.ingest(src)
    assert query(box.conninfo, "SELECT sku, name, description FROM products ORDER BY sku") == m.table()
    [fid] = query(box.conninfo, "SELECT id FROM ingest.files WHERE name = 'products.csv'")[0]
    entries = box.journal("INGEST_FILE=products.csv")
    assert entries and all(e["INGEST_FILE_ID"] == str(fid) for e in entries)
    assert any(e.get("INGEST_STATE") == "done" and "INGEST_ROWS" in e for e in entries)
    chunks = {e["INGEST_CHUNK"] for e in entries if "INGEST_CHUNK" in e}
    assert len(chunks) >= 10
    assert all(e["PRIORITY"] in ("3", "4", "5", "6") for e in entries)
    assert any("registered" in e["MESSAGE"] for e in entries)


def test_reload_applies_workers_and_rejects_a_broken_config(box):
    pid = box.prop("MainPID")
    box.write_config(workers=3)
    box.run("systemctl", "reload", "ingestd")
    assert box.prop("MainPID") == pid and box.prop("ActiveState") == "active"
    msgs = [e["MESSAGE"] for e in box.journal("-n", "20")]
    assert any("reload: workers changed" in m for m in msgs), msgs
    box.write_config(workers='"many"')
    box.run("systemctl", "reload", "ingestd")
    msgs = [e["MESSAGE"] for e in box.journal("-n", "20")]
    assert any("reload failed, keeping the running configuration" in m and "workers" in m for m in msgs)
    assert box.prop("ActiveState") == "active" and box.prop("MainPID") == pid
    box.write_config(workers=3)
    box.run("systemctl", "reload", "ingestd")


def test_stop_during_load_then_restart_finishes(box, tmp_path):
    # the table as the previous test left it (checked there against the model)
    m = Model()
    m.products = {(sku,): (sku, name, desc) for sku, name, desc in
                  query(box.conninfo, "SELECT sku, name, description FROM products")}
    src = generate(tmp_path / "big.csv", 150000, 8)
    box.drop(src, "big.csv")
    deadline = time.time() + 60
    while not query(box.conninfo, "SELECT count(*) FROM ingest.chunks c JOIN ingest.files f "
                                  "ON f.id = c.file_id WHERE f.name = 'big.csv' AND c.state = 'done'")[0][0]:
        assert time.time() < deadline
        time.sleep(0.05)
    t0 = time.time()
    box.run("systemctl", "stop", "ingestd")
    why = lambda: (box.run("systemctl", "status", "ingestd", "--no-pager", check=False).stdout +
                   box.run("journalctl", "-u", "ingestd", "-n", "40", "--no-pager", check=False).stdout)
    assert time.time() - t0 < 60
    assert box.prop("ActiveState") == "inactive", why()
    state = query(box.conninfo, "SELECT state FROM ingest.files WHERE name = 'big.csv'")[0][0]
    assert state == "loading", (state, why())
    box.run("systemctl", "start", "ingestd")
    wait_file_state(box.conninfo, "big.csv", "done")
    m.ingest(src)
    assert query(box.conninfo, "SELECT sku, name, description FROM products ORDER BY sku") == m.table()
    assert dict(query(box.conninfo, "SELECT name, no_of_products FROM products_agg")) == m.aggregate()


def test_killed_main_process_is_restarted(box):
    pid = box.prop("MainPID")
    box.run("kill", "-9", pid)
    deadline = time.time() + 30
    while box.prop("MainPID") in (pid, "0") or box.prop("ActiveState") != "active":
        assert time.time() < deadline, box.run("systemctl", "status", "ingestd", check=False).stdout
        time.sleep(0.2)
    assert int(box.prop("NRestarts")) >= 1


def test_stuck_loop_is_restarted_by_the_watchdog(box):
    dropin = box.path("/etc/systemd/system/ingestd.service.d")
    os.makedirs(dropin, exist_ok=True)
    with open(os.path.join(dropin, "watchdog.conf"), "w") as f:
        f.write("[Service]\nWatchdogSec=2s\n")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "ingestd")
    box.wait_active()
    pid = box.prop("MainPID")
    restarts = int(box.prop("NRestarts"))
    box.run("kill", "-STOP", pid)              # the event loop stops answering
    deadline = time.time() + 30
    while box.prop("MainPID") in (pid, "0") or box.prop("ActiveState") != "active":
        assert time.time() < deadline, box.run("systemctl", "status", "ingestd", check=False).stdout
        time.sleep(0.2)
    assert int(box.prop("NRestarts")) == restarts + 1
    assert any("Watchdog timeout" in e.get("MESSAGE", "") for e in
               [json.loads(l) for l in box.run("journalctl", "-o", "json", "--no-pager", "-n", "200").stdout.splitlines()])
