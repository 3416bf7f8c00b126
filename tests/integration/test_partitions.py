"""products hash-partitioned by sku (database.partitions). The loads, updates,
rejects, faults and the deferred key run on it in their own modules
(BOTH_LAYOUTS); here: the layout itself, and a count that does not fit the
table."""
import time

from conftest import generate, primary_key, query
from model import Model


def partitions(d):
    return [r[0] for r in query(d.conninfo, "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                            "ON c.oid = i.inhrelid WHERE i.inhparent = 'products'::regclass "
                                            "ORDER BY c.relname")]


def test_products_is_partitioned_and_every_partition_holds_rows(daemon, tmp_path):
    src = generate(tmp_path / "p.csv", 20000, 61)
    d = daemon(partitions=4).start()
    d.drop(src)
    assert query(d.conninfo, "SELECT relkind FROM pg_class WHERE oid = 'products'::regclass") == [("p",)]
    assert partitions(d) == ["products_p0", "products_p1", "products_p2", "products_p3"]
    per = query(d.conninfo, "SELECT tableoid::regclass::text, count(*) FROM products GROUP BY 1 ORDER BY 1")
    assert len(per) == 4 and all(n > 2000 for _, n in per), per
    assert primary_key(d) == "sku"                   # the deferred key, built on every partition
    m = Model()
    m.ingest(src)
    assert d.products() == m.table()
    assert d.aggregate() == m.aggregate()


def test_another_partition_count_is_refused_naming_both(daemon, tmp_path):
    d = daemon().start()                              # products as one table
    d.stop()
    d2 = daemon(tag="-4", partitions=4).start(wait_ready=False)
    d2.wait_log("table products has 0 partitions but the configuration says database.partitions = 4")
    assert "cannot use the database, retrying" in d2.log_text()
    time.sleep(1)
    assert "ready:" not in d2.log_text() and d2.proc.poll() is None
    assert query(d.conninfo, "SELECT relkind FROM pg_class WHERE oid = 'products'::regclass") == [("r",)]
