"""Three minutes of tools/soak: files of every kind arriving at random while
workers and the supervisor are killed -9, PostgreSQL restarts and products'
disk fills; the soak checks the tables against the model, the accounting,
retention, the supervisor's RSS and fds, and exits 1 on any failed check.
docs/RELIABILITY.md reports the runs so far."""
import os
import subprocess

from conftest import BUILD, ROOT


def test_three_minute_soak():
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "soak"), "--minutes", "3", "--seed", "1"],
                       capture_output=True, text=True, timeout=1200, env=dict(os.environ, INGESTD_BUILD=BUILD))
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "soak: all checks hold" in p.stdout
    for fault in ("worker killed -9", "supervisor killed -9", "PostgreSQL restarted", "disk full"):
        assert fault in p.stdout, "the run had no fault '%s':\n%s" % (fault, p.stdout)
