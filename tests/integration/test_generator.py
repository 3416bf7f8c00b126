"""The generator reproduces the reference file's shape (DESIGN.md "The
input"), checked at 500,000 rows with Python's csv module, and is deterministic."""
import collections
import csv
import hashlib
import os

from conftest import generate

# the real products.csv, as DESIGN.md describes it
REFERENCE = dict(rows=500000, skus=466693, pairs=499994, names=222024, top_name=230, mbytes=85)


def test_reference_shape_at_500k(tmp_path):
    path = generate(tmp_path / "p.csv", 500000, 1)
    raw = open(path, "rb").read()
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        assert next(r) == ["name", "sku", "description"]
        rows = list(r)
    skus = collections.Counter(s for _, s, _ in rows)
    names = collections.Counter(n for n, _, _ in rows)
    pairs = {(s, n) for n, s, _ in rows}
    assert len(rows) == REFERENCE["rows"]
    assert abs(len(skus) - REFERENCE["skus"]) / REFERENCE["skus"] < 0.002
    assert abs(len(pairs) - REFERENCE["pairs"]) <= 20
    assert abs(len(names) - REFERENCE["names"]) / REFERENCE["names"] < 0.02
    assert abs(names.most_common(1)[0][1] - REFERENCE["top_name"]) / REFERENCE["top_name"] < 0.15
    assert abs(len(raw) / 1e6 - REFERENCE["mbytes"]) / REFERENCE["mbytes"] < 0.05
    assert raw.count(b"\r\n") >= 500001                   # CRLF record ends
    multiline = sum("\n" in d for _, _, d in rows) / len(rows)
    assert 0.55 < multiline < 0.65                         # ~60% quoted, several lines, bare LF
    assert b'"' in raw and b"\r\n" not in b"".join(d.encode() for _, _, d in rows[:1000])
    assert max(map(len, skus)) <= 19 and all(s == s.lower() and "-" in s for s in list(skus)[:1000])
    assert max(map(len, names)) <= 30 and max(len(d) for _, _, d in rows) <= 200
    repeated = [s for s, c in skus.items() if c > 1]
    assert repeated                                         # a repeat nearly always has another name


def test_deterministic(tmp_path):
    a = generate(tmp_path / "a.csv", 20000, 42)
    b = generate(tmp_path / "b.csv", 20000, 42)
    c = generate(tmp_path / "c.csv", 20000, 43)
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert digest(a) == digest(b) != digest(c)
    assert os.path.getsize(a) > 0
