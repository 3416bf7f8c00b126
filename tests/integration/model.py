"""The reference: a sequential model of ingestd's semantics, written from
DESIGN.md with Python's csv module, independent of the C code. Apply files in
arrival order; the result is what products and products_agg must hold."""
import collections
import csv
import io

COLUMNS = ("sku", "name", "description")


def read_rows(path):
    """Data rows of a well-formed file as dicts (header names lowercased)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        for fields in reader:
            if fields == []:          # a blank line is not data
                continue
            yield dict(zip(header, fields))


def key_of(row, key):
    return (row["sku"],) if key == "sku" else (row["sku"], row["name"])


class Model:
    def __init__(self, key="sku"):
        self.key = key
        self.products = {}             # key tuple -> (sku, name, description)
        self.rejected = []             # (file, reason)

    def ingest(self, path):
        for row in read_rows(path):
            if not row["sku"].strip():
                self.rejected.append((path, "empty sku"))
                continue
            self.products[key_of(row, self.key)] = (
                row["sku"], row["name"], row.get("description"))

    def update(self, path):
        for row in read_rows(path):
            k = key_of(row, self.key)
            if k not in self.products:
                self.rejected.append((path, "unknown sku"))
                continue
            sku, name, desc = self.products[k]
            if "name" in row and self.key == "sku":
                name = row["name"]
            if "description" in row:
                desc = row["description"]
            self.products[k] = (sku, name, desc)

    def table(self):
        return sorted(self.products.values(), key=lambda r: (r[0], r[1]))

    def aggregate(self):
        return dict(collections.Counter(name for _, name, _ in self.products.values()))


def write_csv(path, header, rows, crlf=True):
    """Writes rows the way Python's csv module does (QUOTE_MINIMAL)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    w.writerows(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(buf.getvalue())
