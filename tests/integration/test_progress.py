"""ingestctl's progress (ingest --wait on a terminal and piped) and status
--watch, run on a pseudo-terminal the way a person sees them. The numbers
are checked against what the test generated and against products."""
import json
import os
import pty
import re
import select
import signal
import subprocess
import time

from conftest import INGESTCTL, generate, query


def run_on_pty(args, until=None, seconds=None):
    """Runs args with stdout and stderr on a new terminal; returns (exit
    status, everything written). seconds: send SIGINT after that long."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out, start, interrupted = b"", time.monotonic(), False
    while True:
        if seconds and not interrupted and time.monotonic() - start > seconds:
            p.send_signal(signal.SIGINT)
            interrupted = True
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert time.monotonic() - start < 300, out[-2000:]
    os.close(master)
    return p.wait(30), out.decode(errors="replace")


def test_wait_on_a_terminal_keeps_one_line_then_a_summary(daemon, tmp_path):
    rows = 200000
    src = generate(tmp_path / "big.csv", rows, 3)
    d = daemon(chunk_size="256k").start()
    rc, out = run_on_pty([INGESTCTL, "-c", d.config, "ingest", src, "--wait", "--timeout", "240"])
    assert rc == 0, out[-3000:]
    out = out.replace("\r\n", "\n")             # the terminal's own newline translation
    updates = out.split("\r\x1b[K")
    assert updates[0] == "" and len(updates) > 3, out[:2000]
    assert all("\n" not in u for u in updates[1:-1]), "a progress line ended a line: %r" % updates
    percents = [(int(m.group(1)), float(m.group(2)))
                for u in updates for m in [re.search(r"loading (\d+)%, (\d+) rows/s, ETA \d+:\d\d ", u)] if m]
    assert percents, "no line with a percent, a rate and an ETA: %r" % updates[:20]
    assert [p for p, _ in percents] == sorted(p for p, _ in percents)
    assert all(0 <= p <= 100 and r > 0 for p, r in percents)
    m = re.fullmatch(r"big\.csv: done in ([\d.]+) s: (\d+) rows \((\d+) loaded, (\d+) rejected, (\d+) superseded\), "
                     r"(\d+) rows/s; products_agg refreshed\n", updates[-1])
    assert m, repr(updates[-1])
    seconds, total, loaded, rejected, superseded, rate = (float(x) for x in m.groups())
    assert total == rows and loaded + rejected + superseded == rows
    assert loaded == query(d.conninfo, "SELECT count(*) FROM products")[0][0]
    assert abs(rate - rows / seconds) <= max(1, 0.01 * rate)


def test_wait_piped_prints_a_line_per_change(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 20000, 4)
    d = daemon(chunk_size="64k").start()
    err = d.ctl("ingest", src, "--wait", "--timeout", "120").stderr
    lines = err.splitlines()
    assert "\r" not in err and "\x1b" not in err and "ETA" not in err
    assert lines[-1] == "p.csv: done, products_agg refreshed"
    counts = [re.fullmatch(r"p\.csv: [a-z %0-9]+, (\d+)/(\d+) chunks, (\d+) rows loaded, \d+ rejected, \d+ superseded",
                           l) for l in lines[:-1]]
    assert all(counts), lines
    assert len(set(lines[:-1])) == len(lines) - 1, "a line repeated without a change"
    done = [int(m.group(1)) for m in counts]
    assert done == sorted(done) and done[-1] == int(counts[-1].group(2)) > 1


def test_status_watch_redraws_until_interrupted(daemon, tmp_path):
    d = daemon().start()
    d.drop(generate(tmp_path / "w.csv", 100))
    rc, out = run_on_pty([INGESTCTL, "-c", d.config, "status", "--watch"], seconds=2.6)
    assert rc == 0, out
    draws = out.split("\x1b[H\x1b[2J")
    assert draws[0] == "" and len(draws) >= 3, out
    for draw in draws[1:]:
        assert "ingestctl status, every 1 s" in draw and "w.csv" in draw and d.node in draw, draw
    p = subprocess.Popen([INGESTCTL, "-c", d.config, "status", "--watch"], stdout=subprocess.PIPE, text=True)
    time.sleep(2.6)
    p.send_signal(signal.SIGINT)
    piped, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and "\x1b" not in piped
    assert piped.count("ingestctl status, every 1 s") >= 2
    p = subprocess.run([INGESTCTL, "-c", d.config, "status", "--watch", "--json"], capture_output=True, text=True)
    assert p.returncode == 64 and "--json" in p.stderr


def test_status_json_fields_are_documented(daemon, tmp_path):
    """Every field of status --json is described in ingestctl(1), and the
    page describes no field that is not there."""
    d = daemon().start()
    d.drop(generate(tmp_path / "j.csv", 100))
    st = json.loads(d.ctl("status", "--json").stdout)
    page = open(os.path.join(os.path.dirname(__file__), "..", "..", "man", "ingestctl.1")).read()
    section = page.split(".SH JSON OUTPUT")[1].split("\n.SH ")[0].replace("\\-", "-").replace("\\(em", "")
    documented = {}
    for obj, body in re.findall(r"\.SS (files|nodes)\n(.*?)(?=\n\.SS |\Z)", section, re.S):
        documented[obj] = set(re.findall(r"^\.TP\n\.B (\w+)$", body, re.M))
    assert documented.get("files") == set(st["files"][0]) and documented.get("nodes") == set(st["nodes"][0]), \
        (documented, set(st["files"][0]), set(st["nodes"][0]))
