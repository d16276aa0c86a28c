"""Sphinx extension: start every build with an empty ``reports/`` folder.

MyST-NB writes ``_build/html/reports/<chapter>.err.log`` when a chapter fails to
execute, and nothing removes it when a later build succeeds; a reader of the
build folder would then find a stale failure. This removes the folder when the
builder starts, so any report in it belongs to the build that just ran.
"""
import shutil
from pathlib import Path


def _clear_reports(app) -> None:
    shutil.rmtree(Path(app.outdir) / "reports", ignore_errors=True)


def setup(app):
    app.connect("builder-inited", _clear_reports)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
