"""What ingestd(8), LIMITS AND GUARANTEES, says was tested: a field of a
megabyte loads when limits.max_field allows it and is a rejected row (not a
failed file) when it does not, with the rest of the file loaded."""
import csv

from conftest import query
from model import Model, write_csv

BIG = "x" * (1 << 20) + "\u00e9\"quoted\",\nnewline"


def rows():
    return [("a%03d" % i, "Name %d" % (i % 5), BIG if i == 7 else "d%d" % i) for i in range(50)]


def test_a_one_megabyte_field_loads_within_max_field(daemon, tmp_path):
    src = str(tmp_path / "big_field.csv")
    write_csv(src, ["sku", "name", "description"], rows())
    d = daemon(max_field=2 << 20).start()
    d.drop(src)
    csv.field_size_limit(4 << 20)                           # the model's reader, too
    m = Model()
    m.ingest(src)
    assert query(d.conninfo, "SELECT sku, name, description FROM products ORDER BY sku") == m.table()
    assert query(d.conninfo, "SELECT length(description) FROM products WHERE sku = 'a007'")[0][0] == len(BIG)


def test_a_field_over_max_field_is_one_rejected_row(daemon, tmp_path):
    src = str(tmp_path / "big_field.csv")
    write_csv(src, ["sku", "name", "description"], rows())
    d = daemon(max_ratio=0.05).start()                      # limits.max_field = 64 KiB
    d.drop(src)
    assert query(d.conninfo, "SELECT state, rows_loaded, rows_rejected FROM ingest.files") == [("done", 49, 1)]
    assert query(d.conninfo, "SELECT code, line FROM ingest.rejects") == [("field_too_long", 9)]
    assert query(d.conninfo, "SELECT count(*) FROM products WHERE sku = 'a007'")[0][0] == 0
