"""Memory stays flat: peak RSS of the supervisor and of every worker is the
same for a file of 20x chunk_size and for one 4x larger."""
import re

from conftest import generate


def peak_rss(daemon, src):
    d = daemon(workers=2, chunk_size="1M")
    d.start(debug=True)
    d.drop(src)
    with open("/proc/%d/status" % d.proc.pid) as f:
        supervisor = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
    workers = [int(x) for x in re.findall(r"peak RSS (\d+) kB", d.log_text())]
    d.stop()
    return supervisor, max(workers), len(workers)


def test_peak_rss_does_not_grow_with_file_size(daemon, tmp_path, db):
    small = generate(tmp_path / "small.csv", 125000, 1)     # ~21 MB = 20x chunk_size
    large = generate(tmp_path / "large.csv", 500000, 2)     # ~86 MB = 4x larger
    sup_s, work_s, n_s = peak_rss(daemon, small)
    (tmp_path / "state").rename(tmp_path / "state-small")
    sup_l, work_l, n_l = peak_rss(daemon, large)
    print("\npeak RSS kB: supervisor %d -> %d, worker %d -> %d (%d and %d chunks)"
          % (sup_s, sup_l, work_s, work_l, n_s, n_l))
    assert n_s >= 20 and n_l >= 4 * 20
    assert sup_l <= sup_s * 1.2 + 1024
    assert work_l <= work_s * 1.2 + 1024
    assert sup_l < 32 * 1024 and work_l < 64 * 1024
