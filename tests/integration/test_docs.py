"""The man pages and README match the code: every config key the daemon
accepts is documented, and the pages render without warnings."""
import glob
import os
import re
import subprocess

from conftest import INGESTCTL, INGESTD, ROOT


def config_keys(tmp_path):
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    out = subprocess.run([INGESTD, "-c", str(conf), "--check-config"], capture_output=True,
                         text=True, check=True).stdout
    keys = [l.split(" = ")[0] for l in out.splitlines() if " = " in l]
    assert len(keys) >= 13
    return keys


def test_every_config_key_is_in_the_man_page_readme_and_example(tmp_path):
    page = open(os.path.join(ROOT, "man", "ingestd.conf.5")).read().replace("\\-", "-")
    readme = open(os.path.join(ROOT, "README.md")).read()
    example = open(os.path.join(ROOT, "conf", "ingestd.conf")).read()
    for key in config_keys(tmp_path):
        assert re.search(r"\.BR %s " % re.escape(key), page), "ingestd.conf(5) lacks " + key
        assert "`%s`" % key in readme, "README lacks " + key
        assert key.split(".")[-1] in example, "conf/ingestd.conf lacks " + key
    # and the example file is valid as shipped
    subprocess.run([INGESTD, "-c", os.path.join(ROOT, "conf", "ingestd.conf"), "--check-config"],
                   check=True, capture_output=True)


def test_man_pages_render_without_warnings():
    pages = glob.glob(os.path.join(ROOT, "man", "*.[0-9]"))
    assert len(pages) == 3
    for page in pages:
        p = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                           env=dict(os.environ, MANWIDTH="80"))
        assert p.returncode == 0 and p.stderr == "", (page, p.stderr)


def test_options_and_commands_are_documented():
    ctl = open(os.path.join(ROOT, "man", "ingestctl.1")).read().replace("\\-", "-")
    for word in ("ingest", "update", "status", "rejects", "retry", "aggregate", "prune",
                 "--wait", "--timeout", "--json", "--all", "--limit", "--config", "--watch", "--dry-run"):
        assert word in ctl, word
        assert word in subprocess.run([INGESTCTL, "--help"], capture_output=True, text=True).stdout
    daemon = open(os.path.join(ROOT, "man", "ingestd.8")).read().replace("\\-", "-")
    for word in ("--check-config", "--config", "--debug", "SIGTERM", "SIGHUP", "INGEST_FILE",
                 "ingest.chunks", "ingest.rejects", "products_agg"):
        assert word in daemon, word
