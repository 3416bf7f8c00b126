"""The Debian package (debian/): built with dpkg-buildpackage from the files
git tracks, lintian clean, installed with dpkg into a booted container (the
host's / with throwaway overlays, systemd-nspawn as in test_systemd), set up
as README says, started with systemctl, fed a file, purged."""
import os
import re
import shutil
import subprocess
import time

import psycopg2
import pytest

from conftest import ROOT, free_port, generate, query
from model import Model
from test_systemd import WORK, Container, sh, wait_file_state

# what a purge may leave (the data folders), or what the system changes by
# itself meanwhile (the host's own PostgreSQL clusters show through the overlay)
UNTRACKED = re.compile(r"^/(var/(lib/(ingestd|dpkg|systemd|apt|postgresql)|log|cache|tmp|backups)|etc/(ld\.so\.cache|"
                       r"(passwd|group|shadow|gshadow)-?))(/|$)")


@pytest.fixture(scope="module")
def deb():
    for tool in ("dpkg-buildpackage", "lintian", "systemd-nspawn"):
        if not shutil.which(tool):
            pytest.fail("%s is missing: tools/bootstrap installs debhelper, lintian, systemd-container" % tool)
    shutil.rmtree(WORK, ignore_errors=True)
    src = os.path.join(WORK, "deb", "ingestd")
    os.makedirs(src)
    os.chmod(WORK, 0o755)
    files = sh("git", "-C", ROOT, "ls-files", "-z").stdout.split("\0")
    tar = subprocess.Popen(["tar", "-C", ROOT, "--null", "-T", "-", "-cf", "-"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE)
    untar = subprocess.Popen(["tar", "-C", src, "-xf", "-"], stdin=tar.stdout)
    tar.stdin.write("\0".join(f for f in files if f).encode())
    tar.stdin.close()
    assert untar.wait() == 0 and tar.wait() == 0
    p = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    [path] = [os.path.join(WORK, "deb", f) for f in os.listdir(os.path.join(WORK, "deb"))
              if re.fullmatch(r"ingestd_[0-9.]+_[a-z0-9]+\.deb", f)]
    yield path
    shutil.rmtree(WORK, ignore_errors=True)


def test_lintian_reports_no_error_and_no_warning(deb):
    p = subprocess.run(["lintian", "--fail-on", "error,warning", deb], capture_output=True, text=True)
    found = [l for l in p.stdout.splitlines() if re.match(r"^[EW]: ", l)]
    assert p.returncode == 0 and not found, p.stdout + p.stderr


def files_outside_data(box):
    # /var/tmp holds the overlays' own upper directories (of the host)
    out = box.run("find", "/etc", "/usr", "/lib", "/var", "-xdev", "-path", "/var/tmp", "-prune", "-o", "-print",
                  timeout=300).stdout.split("\n")
    assert len(out) > 1000, out
    return {f for f in out if f and not UNTRACKED.match(f)}


def test_install_start_load_purge(deb, tmp_path):
    pgdir = os.path.join(WORK, "pg")
    admin = sh(os.path.join(ROOT, "tools", "pgcluster"), "start", pgdir, str(free_port())).stdout.strip()
    # writable overlays of the host's /usr, /etc and /var (dpkg's database): the
    # writes go to temporary upper directories and vanish with the container
    box = Container(admin, binds="--overlay=/usr::/usr --overlay=/etc::/etc --overlay=/var::/var "
                                 "--bind-ro=%s:/deb" % os.path.dirname(deb))
    try:
        before = files_outside_data(box)
        box.run("dpkg", "-i", "/deb/" + os.path.basename(deb))
        assert box.run("getent", "passwd", "ingestd").stdout.startswith("ingestd:")
        assert box.run("stat", "-c", "%U %a", "/var/lib/ingestd/incoming").stdout.split() == ["ingestd", "770"]
        assert box.run("systemctl", "is-enabled", "ingestd", check=False).stdout.strip() == "enabled"
        assert box.run("systemctl", "is-active", "ingestd", check=False).stdout.strip() == "inactive"
        # README: createuser ingestd, createdb -O ingestd ingest, then conninfo in the conffile
        c = psycopg2.connect(admin)
        c.autocommit = True
        c.cursor().execute("CREATE ROLE ingestd LOGIN")
        c.cursor().execute("CREATE DATABASE ingest OWNER ingestd")
        c.close()
        conninfo = re.sub(r"user=\S+", "user=ingestd", admin).replace("dbname=postgres", "dbname=ingest")
        conf = box.path("/etc/ingestd/ingestd.conf")
        text = open(conf).read()
        assert 'conninfo = "' in text
        with open(conf, "w") as f:
            f.write(re.sub(r'conninfo = "[^"]*"', 'conninfo = "%s"' % conninfo, text, count=1))
        box.run("systemctl", "start", "ingestd")
        assert box.run("systemctl", "is-active", "ingestd", check=False).stdout.strip() == "active"
        src = generate(tmp_path / "products.csv", 20000, 5)
        incoming = box.path("/var/lib/ingestd/incoming")
        shutil.copy(src, os.path.join(incoming, ".products.csv"))
        os.chmod(os.path.join(incoming, ".products.csv"), 0o644)
        os.rename(os.path.join(incoming, ".products.csv"), os.path.join(incoming, "products.csv"))
        wait_file_state(conninfo, "products.csv", "done")
        m = Model()
        m.ingest(src)
        assert query(conninfo, "SELECT sku, name, description FROM products ORDER BY sku") == m.table()
        out = box.run("ingestctl", "status").stdout
        assert "products.csv" in out and "done" in out
        box.run("man", "-w", "ingestd.conf")
        box.run("systemctl", "stop", "ingestd")
        box.run("dpkg", "--purge", "ingestd")
        assert box.run("dpkg-query", "-W", "ingestd", check=False).returncode != 0
        assert box.run("getent", "passwd", "ingestd", check=False).returncode != 0
        assert os.path.isdir(box.path("/var/lib/ingestd/done"))        # the data stays, as documented
        left = files_outside_data(box) - before
        assert not left, sorted(left)
    finally:
        box.poweroff()
        subprocess.run([os.path.join(ROOT, "tools", "pgcluster"), "stop", pgdir, "immediate"])
