"""Explicit outcomes at the child boundary (lib/outcome.h): an error that may
pass (too many open files) leaves the file to be tried again; an error about
the file itself (missing, a symbolic link, unreadable) fails it with a message
naming the file and the error. The plan child is run the way the supervisor
runs it, `ingestd --plan ID`, on a file row and a file made as registration
makes them; a chunk worker the same way with `--worker`."""
import os
import resource
import subprocess

from conftest import INGESTD, NO_DAC, generate, query
from model import Model

EX_TEMPFAIL, EX_DATAERR, EX_UNAVAILABLE = 75, 65, 69


def registered(d, src, name="p.csv"):
    """A file as registry_register leaves it: a row in state new and the file
    under processing/ as ID-NAME. Returns (id, path under processing/)."""
    d.start()      # creates the schema and the folders
    d.stop()
    [[file_id]] = query(d.conninfo, "SELECT nextval('ingest.files_id_seq')")
    path = "%d-%s" % (file_id, name)
    query(d.conninfo, "INSERT INTO ingest.files (id, name, kind, path, state) VALUES (%s, %s, 'ingest', %s, 'new')",
          (file_id, name, path))
    full = os.path.join(d.state, "processing", path)
    if src:
        os.link(src, full)
    return file_id, full


def child(d, args, nofile=None, prefix=()):
    """`ingestd -c CONF ARGS...` as the supervisor runs it, with at most
    nofile open files."""
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    return subprocess.run(list(prefix) + [INGESTD, "-c", d.config] + [str(a) for a in args], capture_output=True,
                          text=True, preexec_fn=limit, timeout=60)


def plan(d, file_id, nofile=None, prefix=()):
    return child(d, ["--plan", file_id], nofile, prefix)


def file_row(d, file_id):
    return query(d.conninfo, "SELECT state, coalesce(error, ''), chunks FROM ingest.files WHERE id = %s",
                 (file_id,))[0]


def assert_failed_naming(d, file_id, full, why, prefix=()):
    """The plan child records the file's fate (exit 0): failed, with an error
    that names the file and the reason."""
    p = plan(d, file_id, prefix=prefix)
    assert p.returncode == 0, p.stderr
    state, error, _ = file_row(d, file_id)
    assert state == "failed" and full in error and why in error, error


def lowest_nofile_that_connects(d, file_id):
    """The smallest RLIMIT_NOFILE with which the plan child still reaches the
    database: the open of the file itself is then the one that fails."""
    for n in range(4, 64):
        p = plan(d, file_id, nofile=n)
        if "Too many open files; will try again" in p.stderr:
            return p
        if p.returncode == 0:
            return None
    return None


def test_emfile_while_planning_is_retried_not_failed(daemon, tmp_path):
    src = generate(tmp_path / "src.csv", 2000, 71)
    d = daemon()
    file_id, _ = registered(d, src)
    p = lowest_nofile_that_connects(d, file_id)
    assert p is not None, "no fd limit made the file's open fail while the database connection worked"
    assert p.returncode == EX_TEMPFAIL, (p.returncode, p.stderr)
    assert file_row(d, file_id)[0] == "new"          # not failed: it is planned next time
    p = plan(d, file_id)
    assert p.returncode == 0, p.stderr
    state, error, chunks = file_row(d, file_id)
    assert (state, error) == ("loading", "") and chunks >= 1
    d.start()                                         # and the daemon loads it
    d.wait_log("done: ", timeout=60)
    m = Model()
    m.ingest(src)
    assert len(d.products()) == len(m.products)


def test_missing_file_fails_with_its_name(daemon, tmp_path):
    d = daemon()
    file_id, full = registered(d, None)
    assert_failed_naming(d, file_id, full, "No such file or directory")


def test_symlink_fails_with_its_name(daemon, tmp_path):
    src = generate(tmp_path / "src.csv", 100, 72)
    d = daemon()
    file_id, full = registered(d, None)
    os.symlink(src, full)
    assert_failed_naming(d, file_id, full, "Too many levels of symbolic links")


def test_unreadable_file_fails_with_its_name(daemon, tmp_path):
    src = generate(tmp_path / "src.csv", 100, 73)
    d = daemon()
    file_id, full = registered(d, src)
    os.chmod(full, 0)
    os.chmod(str(tmp_path), 0o755)
    assert_failed_naming(d, file_id, full, "Permission denied", prefix=NO_DAC)


def test_worker_missing_file_is_a_bad_file_and_emfile_a_retry(daemon, tmp_path):
    src = generate(tmp_path / "src.csv", 2000, 74)
    d = daemon()
    file_id, full = registered(d, src)
    assert plan(d, file_id).returncode == 0
    claim(d, file_id, 1)

    def worker(path, nofile=None):
        return child(d, ["--worker", file_id, 1, d.node, 1, path], nofile)

    for n in range(4, 64):          # a limit that lets it connect but not open the file
        p = worker(full, n)
        if "Too many open files" in p.stderr or p.returncode == 0:
            break
    assert "Too many open files" in p.stderr and p.returncode == EX_TEMPFAIL, (p.returncode, p.stderr)
    p = worker(full + ".gone")
    assert p.returncode == EX_DATAERR and "No such file or directory" in p.stderr, (p.returncode, p.stderr)
    assert query(d.conninfo, "SELECT state FROM ingest.chunks WHERE file_id = %s AND no = 1", (file_id,))[0][0] \
        == "loading"                # nothing committed: the worker rolled back, the claim stands


def claim(d, file_id, no, node=None):
    """As the supervisor claims a chunk before it forks its worker: attempt 1."""
    query(d.conninfo, "UPDATE ingest.chunks SET state = 'loading', node = %s, attempts = 1 "
                      "WHERE file_id = %s AND no = %s", (node or d.node, file_id, no))


def test_worker_of_a_claim_taken_over_leaves_the_chunk(daemon, tmp_path):
    """A worker forked for a claim that is no longer current (its node was
    declared dead and another node claimed the chunk) commits nothing."""
    src = generate(tmp_path / "src.csv", 2000, 75)
    d = daemon()
    file_id, full = registered(d, src)
    assert plan(d, file_id).returncode == 0
    claim(d, file_id, 1, node="another-node")
    p = child(d, ["--worker", file_id, 1, d.node, 1, full])
    assert p.returncode == EX_UNAVAILABLE and "taken over from node %s" % d.node in p.stderr, (p.returncode, p.stderr)
    claim(d, file_id, 1)
    p = child(d, ["--worker", file_id, 1, d.node, 2, full])      # an earlier claim's worker, late
    assert p.returncode == EX_UNAVAILABLE, (p.returncode, p.stderr)
    assert query(d.conninfo, "SELECT state, node, rows_loaded FROM ingest.chunks WHERE file_id = %s AND no = 1",
                 (file_id,)) == [("loading", d.node, 0)]
    assert query(d.conninfo, "SELECT count(*) FROM products")[0][0] == 0
    p = child(d, ["--worker", file_id, 1, d.node, 1, full])      # the current claim's worker
    assert p.returncode == 0, p.stderr
    assert query(d.conninfo, "SELECT state, node FROM ingest.chunks WHERE file_id = %s AND no = 1",
                 (file_id,)) == [("done", d.node)]
