#!/usr/bin/env python3
"""Writes the bad and odd input files of tests/corpus and EXPECTED.json, the
outcome each must have: a failed file with a message, or a done file with its
loaded count and its rejected rows (line, reason). Rerun after editing; the
output is committed so the fuzzer can seed from it."""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
H = b"sku,name,description\r\n"
cases = {}


def failed(name, data, error):
    cases[name] = (data, {"state": "failed", "error": error})


def done(name, data, loaded, rejected=(), superseded=0):
    cases[name] = (data, {"state": "done", "loaded": loaded, "superseded": superseded,
                          "rejected": [list(r) for r in rejected]})


def rows(n, start=0):
    return b"".join(b"s%d,Name %d,desc %d\r\n" % (i, i, i) for i in range(start, start + n))


failed("empty.csv", b"", "empty file")
failed("header-only.csv", H, "no data rows")
failed("header-only-bom.csv", b"\xef\xbb\xbf" + H, "no data rows")
failed("no-sku-column.csv", b"name,description\r\nA,b\r\n", "no 'sku' column")
failed("one-column.csv", b"sku\na\nb\n", "no 'name' column")
failed("unknown-column.csv", b"sku,name,price\r\na,b,1\r\n", "unknown column 'price'")
failed("duplicate-column.csv", b"sku,name,sku\r\na,b,c\r\n", "appears twice")
failed("trailing-comma-header.csv", b"sku,name,description,\r\na,b,c,\r\n", "unknown column ''")
failed("cr-only.csv", b"sku,name\ra,b\rc,d\r", "header: unknown column")
failed("only-newlines.csv", b"\n\n\n", "unknown column ''")
_r = random.Random(1)
failed("binary.bin", bytes(_r.randrange(256) for _ in range(4096)), "binary file")
failed("no-newline-text.csv", b"D" * 5000, "column name is longer than 4096 bytes")
failed("elf-like.bin", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200, "binary file")
failed("all-rows-bad.csv", H + b",x,y\r\n,x,y\r\n ,x,y\r\n", "above rejects.max_ratio")
done("bom.csv", b"\xef\xbb\xbf" + H + rows(2), 2)
done("mixed-crlf-lf.csv", H + b"a,A,x\nb,B,y\r\nc,C,z\n", 3)
done("blank-lines.csv", H + b"\r\na,A,x\r\n\r\n\nb,B,y\r\n", 2)
done("quoted-newlines.csv", H + b'a,A,"one\ntwo\nthree"\r\nb,B,"x\r\ny"\r\n', 2)
done("doubled-quotes.csv", H + b'a,"The ""Boss""","say ""hi"", ok"\r\n', 1)
done("header-case-spaces.csv", b" SKU , Name ,DESCRIPTION\r\n" + rows(3), 3)
done("columns-reordered.csv", b"description,name,sku\r\nd,N,s\r\n", 1)
done("no-description.csv", b"sku,name\r\na,A\r\nb,B\r\n", 2)
done("utf8-multibyte.csv", H + "é,Zoë Ångström,日本語 😀\r\n".encode() + rows(1), 2)
done("repeated-skus.csv", H + b"a,A1,x\r\nb,B,y\r\na,A2,z\r\na,A3,w\r\n", 2, superseded=2)
done("unterminated-quote-eof.csv", H + rows(3) + b'"open,Never,closed\r\nmore,rows,here\r\n', 3,
     [(5, "unterminated quoted field")])
done("quote-in-unquoted-field.csv", H + rows(2) + b'bad,Sha"q,x\r\n' + rows(1, 9), 3,
     [(4, "stray quote")])
done("text-after-closing-quote.csv", H + b'"a"b,N,x\r\n' + rows(3), 3, [(2, "stray quote")])
done("too-many-fields.csv", H + rows(3) + b"a,b,c,d\r\n", 3, [(5, "expected 3 fields, found 4")])
done("too-few-fields.csv", H + b"a,b\r\n" + rows(3), 3, [(2, "expected 3 fields, found 2")])
done("nul-bytes.csv", H + rows(3) + b"nul,Na\x00me,x\r\n", 3, [(5, "NUL byte")])
done("invalid-utf8.csv", H + rows(3) + b"bad,\xff\xfe,x\r\n", 3, [(5, "invalid UTF-8")])
done("latin1-name.csv", H + rows(5) + "l,José,x\r\n".encode("latin-1"), 5, [(7, "invalid UTF-8")])
done("overlong-field.csv", H + rows(3) + b"long,N," + b"x" * 70000 + b"\r\n", 3,
     [(5, "longer than limits.max_field")])
done("long-line-no-newline.csv", H + rows(3) + b"y" * 300000, 3, [(5, "longer than limits.max_field")])
done("whitespace-sku.csv", H + rows(3) + b"   ,Blank,x\r\n", 3, [(5, "empty sku")])
done("empty-sku.csv", H + b",Nobody,x\r\n" + rows(3), 3, [(2, "empty sku")])
done("crlf-only-inside-quotes.csv", H + b'a,A,"line\r\nnext"\r\n', 1)

if __name__ == "__main__":
    for name, (data, _) in cases.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    with open(os.path.join(HERE, "EXPECTED.json"), "w") as f:
        json.dump({n: e for n, (_, e) in cases.items()}, f, indent=1, sort_keys=True)
    print(len(cases), "files")
