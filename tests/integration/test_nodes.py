"""Several nodes on one database and shared folders (ingestd(8), NODES): each
test ends with the tables equal to the sequential model of the files in
registration order, every file's rows accounted for, nothing left in
processing/ and no worker alive."""
import os
import random
import signal
import socket
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import INGESTCTL, generate, query
from model import Model, write_csv

FAST = dict(heartbeat=0.5, takeover_after=3)


def nodes(daemon, n, **settings):
    """n daemons sharing the folders under one root, node-1 .. node-n."""
    opts = dict(FAST, workers=1, chunk_size="32k")
    opts.update(settings)
    return [daemon(tag="-%d" % i, node="node-%d" % i, **opts) for i in range(1, n + 1)]


def start_all(ns):
    for d in ns:
        d.start(wait_ready=False)
    for d in ns:
        d.wait_log("ready:")
    return ns


def drop(d, src, kind="ingest"):
    """As a producer would: copy under a dot-name, rename into the folder."""
    folder = d.updates if kind == "update" else d.incoming
    name = os.path.basename(src)
    tmp = os.path.join(folder, "." + name)
    with open(src, "rb") as f, open(tmp, "wb") as out:
        out.write(f.read())
    os.rename(tmp, os.path.join(folder, name))


def wait_files(d, n, procs, timeout=240):
    """Until n files are done or failed; every daemon in procs must live."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = query(d.conninfo, "SELECT count(*) FROM ingest.files WHERE state IN ('done', 'failed')")
        if rows[0][0] >= n:
            return
        for p in procs:
            assert p.proc.poll() is None, p.log_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("files not finished:\n%s\n%s" % (
        query(d.conninfo, "SELECT id, name, state, error FROM ingest.files ORDER BY id"),
        "\n".join(p.log_text()[-2500:] for p in procs)))


def model_of(d, sources, key="sku"):
    """The model of the files in the order they were registered."""
    m = Model(key)
    for name, kind in query(d.conninfo, "SELECT name, kind FROM ingest.files ORDER BY id"):
        getattr(m, kind)(sources[name])
    return m


def check_end(ns, sources):
    d = ns[0]
    files = query(d.conninfo, "SELECT name, state, data_rows, rows_loaded + rows_rejected + rows_superseded, "
                              "error FROM ingest.files ORDER BY id")
    assert len(files) == len(sources), files
    for name, state, rows, counted, error in files:
        assert state == "done", (name, state, error)
        assert counted == rows, (name, rows, counted)
    m = model_of(d, sources)
    assert d.products() == m.table()
    assert d.aggregate() == m.aggregate()
    assert query(d.conninfo, "SELECT count(*) FROM ingest.chunks WHERE state <> 'done'")[0][0] == 0
    assert os.listdir(os.path.join(d.state, "processing")) == []
    for n in ns:
        n.stop()
        assert n.workers_alive() == []


def mixed_files(tmp_path, count, rnd):
    """Ingest and update files over one pool of skus, some with bad rows
    (an empty sku; an update of an unknown sku). name -> (path, kind)."""
    pool = ["SKU-%05d" % i for i in range(6000)]
    names = ["name %d" % i for i in range(40)]
    made = []
    for i in range(count):
        kind = "update" if i % 4 == 3 else "ingest"
        path = str(tmp_path / ("f%02d-%s.csv" % (i, kind)))
        rows = []
        for j in range(rnd.randint(500, 4000)):
            sku = rnd.choice(pool)
            if kind == "update":
                rows.append((sku if rnd.random() > 0.05 else "NEW-%d-%d" % (i, j), "upd %d %d" % (i, j)))
            else:
                rows.append((rnd.choice(names), "" if rnd.random() < 0.01 else sku, "d%d-%d" % (i, j)))
        write_csv(path, ("sku", "description") if kind == "update" else ("name", "sku", "description"), rows)
        made.append((path, kind))
    return made


def test_three_nodes_share_the_work(daemon, tmp_path):
    ns = start_all(nodes(daemon, 3))
    rnd = random.Random(15)
    files = mixed_files(tmp_path, 20, rnd)
    # the first file is an ingest, so that updates find skus
    for path, kind in files:
        drop(ns[0], path, kind)
        time.sleep(rnd.uniform(0, 0.4))
    wait_files(ns[0], len(files), ns)
    by_node = dict(query(ns[0].conninfo, "SELECT node, count(*) FROM ingest.chunks WHERE state = 'done' "
                                         "GROUP BY node"))
    assert set(by_node) == {"node-1", "node-2", "node-3"}, by_node
    leaders = query(ns[0].conninfo, "SELECT node FROM ingest.leader")
    assert len(leaders) == 1
    status = ns[1].ctl("status", "--json").stdout
    assert all('"node-%d"' % i in status for i in (1, 2, 3))
    check_end(ns, {os.path.basename(p): p for p, _ in files})


def held_by(d, node):
    return query(d.conninfo, "SELECT file_id, no FROM ingest.chunks WHERE state = 'loading' AND node = %s",
                 (node,))


def wait_held(d, node, timeout=60):
    """Until node holds a chunk; returns them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        held = held_by(d, node)
        if held:
            return held
        time.sleep(0.02)
    raise AssertionError("%s never held a chunk" % node)


def test_kill_9_of_a_node_its_chunks_are_taken_over(daemon, tmp_path):
    ns = start_all(nodes(daemon, 3, chunk_size="256k"))
    src = generate(tmp_path / "big.csv", 200000, 21)
    drop(ns[0], src)
    victim = next(d for d in ns if not query(d.conninfo, "SELECT 1 FROM ingest.leader WHERE node = %s", (d.node,)))
    held = []
    for _ in range(20):             # frozen while it holds a chunk, so that what it holds stays put
        wait_held(ns[0], victim.node)
        pids = node_pids(victim)
        signal_all(pids, signal.SIGSTOP)
        time.sleep(0.3)             # a COMMIT already sent may still land
        held = held_by(ns[0], victim.node)
        if held:
            break
        signal_all(pids, signal.SIGCONT)
    assert held
    victim.proc.kill()                                  # its workers die with it (PR_SET_PDEATHSIG)
    killed_at = time.time()
    victim.proc.wait()
    time.sleep(0.5)                 # its backends have rolled back (or a COMMIT sent before the stop landed)
    held = [h for h in held if h in held_by(ns[0], victim.node)]
    assert held
    survivors = [d for d in ns if d is not victim]
    deadline = killed_at + 3 + 10
    while time.time() < deadline:
        done = query(ns[0].conninfo, "SELECT count(*) FROM ingest.chunks WHERE state = 'done' AND "
                                     "(file_id, no) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))",
                     ([h[0] for h in held], [h[1] for h in held]))[0][0]
        if done == len(held):
            break
        time.sleep(0.1)
    took = time.time() - killed_at
    print("the dead node's %d chunks committed by the others %.1f s after the kill" % (len(held), took))
    assert took < 3 + 10, "the dead node's chunks took %.1f s" % took
    wait_files(ns[0], 1, survivors)
    committers = {r[0] for r in query(ns[0].conninfo, "SELECT node FROM ingest.chunks WHERE (file_id, no) IN "
                                      "(SELECT * FROM unnest(%s::bigint[], %s::int[]))",
                                      ([h[0] for h in held], [h[1] for h in held]))}
    assert victim.node not in committers
    assert any("node %s is dead" % victim.node in d.log_text() for d in survivors)
    assert victim.workers_alive() == []
    check_end(survivors, {"big.csv": src})


def node_pids(d):
    """The supervisor and its children."""
    out = subprocess.run(["pgrep", "-f", "ingestd -c %s" % d.config], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def signal_all(pids, sig):
    """A worker listed a moment ago may have exited since."""
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def test_a_stopped_node_is_declared_dead_then_rejoins(daemon, tmp_path):
    ns = start_all(nodes(daemon, 3, chunk_size="256k"))
    src = generate(tmp_path / "big.csv", 200000, 22)
    drop(ns[0], src)
    frozen = ns[2]
    wait_held(ns[0], frozen.node)
    pids = node_pids(frozen)
    signal_all(pids, signal.SIGSTOP)
    time.sleep(3 * 3)                                   # three times takeover_after
    gone = query(ns[0].conninfo, "SELECT count(*) FROM ingest.nodes WHERE node = %s", (frozen.node,))[0][0]
    signal_all(pids, signal.SIGCONT)
    assert gone == 0, "the frozen node was not declared dead"
    frozen.wait_log("was declared dead by the others")
    wait_files(ns[0], 1, ns)
    deadline = time.time() + 10
    while not query(ns[0].conninfo, "SELECT count(*) FROM ingest.nodes WHERE node = %s", (frozen.node,))[0][0]:
        assert time.time() < deadline, "the node did not rejoin"
        time.sleep(0.1)
    check_end(ns, {"big.csv": src})


class Proxy:
    """TCP on loopback to PostgreSQL's Unix socket; pause() stops forwarding
    in both directions (the connections stay open), resume() goes on."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.running = threading.Event()
        self.running.set()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.socket_path)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.running.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pause(self):
        self.running.clear()

    def resume(self):
        self.running.set()


def test_a_partitioned_node_rejoins_and_nothing_is_applied_twice(daemon, db, tmp_path):
    params = dict(p.split("=", 1) for p in db.split())
    proxy = Proxy(os.path.join(params["host"], ".s.PGSQL.%s" % params["port"]))
    ns = nodes(daemon, 3, chunk_size="256k")
    cut = ns[1]
    cut.conninfo = "host=127.0.0.1 port=%d user=%s dbname=%s" % (proxy.port, params["user"], params["dbname"])
    cut.write_config(**dict(FAST, workers=1, chunk_size="256k", node=cut.node))
    cut.conninfo = db                                    # the test's own queries go direct
    start_all(ns)
    src = generate(tmp_path / "big.csv", 200000, 23)
    drop(ns[0], src)
    wait_held(ns[0], cut.node)
    proxy.pause()
    time.sleep(2 * 3)
    gone = query(ns[0].conninfo, "SELECT count(*) FROM ingest.nodes WHERE node = %s", (cut.node,))[0][0]
    proxy.resume()
    assert gone == 0, "the partitioned node was not declared dead"
    wait_files(ns[0], 1, ns)
    cut.wait_log("was declared dead by the others")
    check_end(ns, {"big.csv": src})


def test_leader_killed_while_planning_another_node_leads(daemon, db, tmp_path):
    ns = start_all(nodes(daemon, 2, chunk_size="256k"))
    # planning ends with the file's UPDATE to 'loading': a trigger makes it
    # wait for a lock this test holds, so the leader is killed mid-plan
    blocker = psycopg2.connect(db)
    blocker.autocommit = True
    cur = blocker.cursor()
    cur.execute("CREATE FUNCTION hold_plan() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$; "
                "CREATE TRIGGER hold_plan BEFORE UPDATE OF state ON ingest.files FOR EACH ROW "
                "WHEN (OLD.state = 'new' AND NEW.state = 'loading') EXECUTE FUNCTION hold_plan()")
    cur.execute("SELECT pg_advisory_lock(4242)")
    [leader] = query(db, "SELECT node FROM ingest.leader")[0]
    old = next(d for d in ns if d.node == leader)
    other = next(d for d in ns if d is not old)
    src = generate(tmp_path / "big.csv", 200000, 24)
    drop(old, src)
    deadline = time.time() + 30
    while not query(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 "
                        "AND NOT granted")[0][0]:
        assert time.time() < deadline, "the plan never reached its commit"
        time.sleep(0.05)
    assert query(db, "SELECT state FROM ingest.files")[0][0] == "new"
    old.proc.kill()
    old.proc.wait()
    cur.execute("SELECT pg_advisory_unlock(4242)")
    blocker.close()
    other.wait_log("node %s leads" % other.node, timeout=30)
    wait_files(other, 1, [other])
    assert query(db, "SELECT DISTINCT node FROM ingest.chunks") == [(other.node,)]
    check_end([other], {"big.csv": src})


def test_poll_mode_takes_a_file_only_once_it_stops_changing(daemon, tmp_path):
    [d] = start_all(nodes(daemon, 1, extra='watch = "poll";\nwatch_interval = 0.5;\n'))
    src = generate(tmp_path / "whole.csv", 20000, 25)
    data = open(src, "rb").read()
    target = os.path.join(d.incoming, "slow.csv")
    with open(target, "wb") as out:                      # written in place, slowly, for 5 s
        for i in range(25):
            out.write(data[i * len(data) // 25:(i + 1) * len(data) // 25])
            out.flush()
            time.sleep(0.2)
    wait_files(d, 1, [d])
    os.rename(src, str(tmp_path / "slow.csv"))
    check_end([d], {"slow.csv": str(tmp_path / "slow.csv")})


def test_two_nodes_started_at_once_on_an_empty_database(daemon, tmp_path):
    ns = start_all(nodes(daemon, 2))                     # both at once: the schema is created once
    src = generate(tmp_path / "p.csv", 20000, 26)
    drop(ns[0], src)
    wait_files(ns[0], 1, ns)
    for d in ns:
        assert not [line for line in d.log_text().splitlines() if ": error:" in line or ": crit:" in line], \
            d.log_text()
    assert query(ns[0].conninfo, "SELECT count(*) FROM ingest.nodes")[0][0] == 2
    check_end(ns, {"p.csv": src})


def test_ingestctl_ingest_without_rename_noreplace(daemon, tmp_path):
    """A filesystem whose rename cannot refuse to replace (EINVAL, as some
    network filesystems): ingestctl writes the copy in place, exclusively."""
    shim = tmp_path / "norename.c"
    shim.write_text('#define _GNU_SOURCE\n#include <errno.h>\n#include <stdio.h>\n'
                    'int renameat2(int a, const char *b, int c, const char *d, unsigned e)\n'
                    '{ (void)a; (void)b; (void)c; (void)d; (void)e; errno = EINVAL; return -1; }\n')
    lib = tmp_path / "norename.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(shim)], check=True)
    [d] = start_all(nodes(daemon, 1))
    src = generate(tmp_path / "p.csv", 5000, 27)
    env = dict(os.environ, LD_PRELOAD=str(lib))
    p = subprocess.run([INGESTCTL, "-c", d.config, "ingest", src, "--wait", "--timeout", "120"],
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert os.listdir(d.incoming) == []                  # no dotfile left behind
    check_end([d], {"p.csv": src})


def test_the_loop_never_waits_long_for_another_sessions_locks(daemon, db, tmp_path):
    """Another node (here: a session of the test) holding ingest.files and
    ingest.chunks locked: the supervisor's statements give up after its
    lock_timeout, the loop goes on (it answers SIGHUP) and tries again."""
    [d] = start_all(nodes(daemon, 1))
    locker = psycopg2.connect(db)
    cur = locker.cursor()
    cur.execute("LOCK TABLE ingest.files, ingest.chunks IN ACCESS EXCLUSIVE MODE")
    time.sleep(1.5)                                       # a pass or two meets the lock
    d.write_config(**dict(FAST, workers=2, chunk_size="32k", node=d.node))
    t0 = time.time()
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("reload: workers changed", timeout=5)
    answered = time.time() - t0
    locker.rollback()
    locker.close()
    assert answered < 3, "the loop took %.1f s to answer SIGHUP" % answered
    assert "trying again on the next pass" in d.log_text()
    src = generate(tmp_path / "p.csv", 5000, 28)
    drop(d, src)
    wait_files(d, 1, [d])
    check_end([d], {"p.csv": src})
