"""Checks of the project itself: install ranges, Colab safety, notebooks, configuration, citations."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import mmlib
from mmlib.timeline import bibliography_keys

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))


def requirements(names=("torch", "torchvision", "numpy", "matplotlib")):
    reqs = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    return {name: reqs[name] for name in names}


def code_cells(path):
    nb = json.loads(path.read_text())
    return [("".join(c["source"]), c) for c in nb["cells"] if c["cell_type"] == "code"]


def markdown_text(path):
    if path.suffix == ".md":
        return path.read_text()
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def toc_files():
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


# --- dependencies: ranges that keep Colab's torch --------------------------------------------

def test_runtime_dependencies_are_open_ranges_not_pins():
    for name, req in requirements().items():
        ops = {spec.operator for spec in req.specifier}
        assert ops <= {">=", ">", "!="}, f"{name}: use a lower bound, not {req.specifier}"


@pytest.mark.parametrize("torch_version,vision_version", [
    ("2.14.1", "0.29.1"),          # this machine's wheels
    ("2.9.0+cu126", "0.24.0+cu126"),  # Colab, late 2025
    ("2.10.0+cu128", "0.25.0+cu128"),
    ("3.0.0", "0.30.0"),             # a future Colab release must not trigger a downgrade
])
def test_ranges_admit_this_machine_and_colab(torch_version, vision_version):
    reqs = requirements()
    assert reqs["torch"].specifier.contains(Version(torch_version), prereleases=True)
    assert reqs["torchvision"].specifier.contains(Version(vision_version), prereleases=True)


def test_installed_torch_satisfies_the_ranges():
    import numpy
    import torch
    import torchvision

    for name, module in (("torch", torch), ("torchvision", torchvision), ("numpy", numpy)):
        assert requirements()[name].specifier.contains(Version(module.__version__), prereleases=True)


def test_installing_mmlib_into_an_env_with_torch_changes_no_torch(tmp_path):
    """What Colab's install cell does, as a dry run against this environment (offline)."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
         "--quiet", "--report", str(report), str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installs = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert installs == {"mmlib"}, f"installing mmlib would also install {sorted(installs - {'mmlib'})}"


def test_a_plain_install_brings_every_subpackage(tmp_path):
    """Colab installs mmlib with plain pip, not editable: the wheel must hold mmlib.world,
    mmlib.vlm, mmlib.generate, mmlib.recipes, ..., every folder of mmlib with an __init__.py,
    and the shipped weights."""
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation", "--quiet",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    packaged = {Path(n).parent.as_posix() for n in names if n.endswith("/__init__.py")}
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "mmlib").rglob("__init__.py")}
    assert packages - packaged == set(), f"a plain install would lack {sorted(packages - packaged)}"
    assert any(n.startswith("mmlib/weights/") and n.endswith(".pt") for n in names), "the shipped weights"


def test_extras_book_and_test():
    extras = PYPROJECT["project"]["optional-dependencies"]
    book = {Requirement(r).name: Requirement(r) for r in extras["book"]}
    assert str(book["jupyter-book"].specifier) in ("<2,>=1.0.4", ">=1.0.4,<2")
    assert {"pytest", "nbval"} <= {Requirement(r).name for r in extras["test"]}
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"


def test_the_readme_reading_command_exists_after_set_up():
    """README: '.venv/bin/jupyter lab book/' -- JupyterLab comes with the [book] extra."""
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/jupyter lab book/" in readme
    assert any(Requirement(r).name == "jupyterlab" for r in PYPROJECT["project"]["optional-dependencies"]["book"])
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "jupyter-book").exists():  # this environment was set up with the [book] extra
        assert (bin_dir / "jupyter-lab").exists(), "jupyter lab would fail: 'jupyter-lab' not found"


def test_environment_yml_installs_the_project_with_its_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    assert python.removeprefix("python") == PYPROJECT["project"]["requires-python"]
    assert "pip" in deps
    pip_lines = next(d["pip"] for d in deps if isinstance(d, dict))
    match = re.fullmatch(r"-e \.\[(.*)\]", pip_lines[0])
    assert match, f"environment.yml should install the project with pip, got {pip_lines}"
    assert set(match.group(1).split(",")) == set(PYPROJECT["project"]["optional-dependencies"])
    assert len(pip_lines) == 1, "versions belong in pyproject.toml, not environment.yml"


# --- one repository URL everywhere ---------------------------------------------------------

def test_repository_url_agrees_everywhere():
    url = mmlib.REPOSITORY
    assert CONFIG["repository"]["url"] == url
    assert PYPROJECT["project"]["urls"]["Repository"] == url
    assert url in (ROOT / "README.md").read_text()
    slug = url.removeprefix("https://github.com/")
    assert f"colab.research.google.com/github/{slug}/blob/main/book/" in (ROOT / "README.md").read_text()
    for nb in NOTEBOOKS:
        setup = code_cells(nb)[0][0]
        assert f"git+{url}" in setup, f"{nb.name}: install cell does not install from {url}"


# --- notebooks -----------------------------------------------------------------------------

def test_every_notebook_is_in_the_toc_and_every_toc_file_exists():
    files = toc_files()
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".ipynb", ".md")), f"_toc.yml lists missing {f}"


def test_notebooks_are_committed_without_outputs():
    for nb in NOTEBOOKS:
        for source, cell in code_cells(nb):
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{nb.name}: clear outputs"


def test_notebook_code_cells_fit_the_page():
    """Cells short enough to read at once (15 lines) and narrow enough for the page (76 chars)."""
    for nb in NOTEBOOKS:
        for number, (source, _) in enumerate(code_cells(nb)):
            lines = source.splitlines()
            assert len(lines) <= 15, f"{nb.name}: code cell {number} has {len(lines)} lines"
            wide = [line for line in lines if len(line) > 76]
            assert not wide, f"{nb.name}: code cell {number} has lines over 76 characters: {wide[0]!r}"


def _mmlib_object(name: str):
    """The mmlib object a notebook names, e.g. ``adapt`` or ``algorithms.gru_cell_by_hand``."""
    import importlib
    import pkgutil

    head, *rest = name.split(".")
    modules = [importlib.import_module(f"mmlib.{m.name}")
               for m in pkgutil.iter_modules(mmlib.__path__)]
    for module in [mmlib, *modules]:
        obj = getattr(module, head, None)
        if obj is not None and (rest or getattr(obj, "__module__", "").startswith("mmlib")):
            for part in rest:
                obj = getattr(obj, part)
            return obj
    raise LookupError(name)


def test_source_shown_in_the_book_fits_the_page():
    """``show_source(f)`` prints mmlib's code on the page: same width rule as the cells."""
    import inspect
    import textwrap

    names = {m for path in NOTEBOOKS for cell, _ in code_cells(path)
             for m in re.findall(r"show_source\(([\w.]+)\)", cell)}
    assert names, "no chapter shows mmlib's source any more?"
    for name in sorted(names):
        lines = textwrap.dedent(inspect.getsource(_mmlib_object(name))).splitlines()
        wide = [line for line in lines if len(line) > 76]
        assert not wide, f"show_source({name}) shows lines over 76 characters: {wide[:2]}"


def test_every_notebook_starts_with_the_setup_pattern():
    for nb in NOTEBOOKS:
        setup = code_cells(nb)[0][0]
        assert 'find_spec("mmlib") is None' in setup, f"{nb.name}: install only when mmlib is missing"
        install = [line for line in setup.splitlines() if "pip" in line or "git+" in line]
        assert install and not any("torch" in line for line in install), f"{nb.name}: never install torch"
        match = re.search(r'device = mmlib\.setup\(seed=\d+, chapter="(\w+)"\)', setup)
        assert match, f"{nb.name}: seed, device, and the chapter (for its measured time)"
        assert match.group(1) == nb.stem, f"{nb.name}: setup names chapter {match.group(1)!r}"


def test_every_chapter_has_a_measured_time():
    """Each chapter's first line shows its wall time from benchmarks/run.py --write."""
    from mmlib.notebook import reference_time

    for nb in NOTEBOOKS:
        assert reference_time(nb.stem).startswith("about "), nb.name
    with pytest.raises(KeyError, match="benchmarks/run.py --write"):
        reference_time("99_no_such_chapter")


def test_glued_names_in_prose_are_glued_in_code():
    for nb in NOTEBOOKS:
        used = set(re.findall(r"\{glue(?::\w+)?\}`(\w+)", markdown_text(nb)))
        code = "\n".join(src for src, _ in code_cells(nb))
        glued = set(re.findall(r"glue\(\s*[\"'](\w+)[\"']", code))
        if re.search(r"mmlib\.setup\([^)]*chapter=", code):
            glued.add("reference_time")  # setup glues the chapter's measured time
        prefixes = re.findall(r"glue\(\s*f[\"'](\w+)\{", code)  # glue(f"fusion_acc_{name}", ...)
        used = {u for u in used if not any(u.startswith(p) for p in prefixes)}
        assert used <= glued, f"{nb.name}: prose quotes {sorted(used - glued)} but the code never glues them"


def test_every_citation_is_in_the_bibliography():
    keys = bibliography_keys()
    for path in NOTEBOOKS + PAGES:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", markdown_text(path)):
            for key in group.split(","):
                assert key.strip() in keys, f"{path.name} cites unknown key {key.strip()!r}"


def test_bibliography_labels_are_clean():
    """The bibliography page labels entries as pybtex's alpha style does ([VSP+17], [Kar20]).
    LaTeX accent macros in names turn into garbage there ([BaltruvsaitisAM19]): write names in
    Unicode, and keep labels short (organisations, a single braced name, keep theirs)."""
    from pybtex.database import parse_file
    from pybtex.style.labels.alpha import LabelStyle

    text = (ROOT / "mmlib" / "references.bib").read_text()
    macros = re.findall(r"\\[`'\"^~vuHcdbL]\{?\w?", "\n".join(re.findall(r"author\s*=\s*\{(.*)\}", text)))
    assert not macros, f"write accented names in Unicode, not {macros[:3]}"
    entries = list(parse_file(str(ROOT / "mmlib" / "references.bib")).entries.values())
    for entry, label in zip(entries, LabelStyle().format_labels(entries)):
        people = entry.persons.get("author", [])
        organisation = len(people) == 1 and not people[0].first_names
        pattern = r"[A-Za-z]+\d{2}[a-z]?" if organisation else r"[A-Za-z]{1,6}\+?\d{2}[a-z]?"
        assert re.fullmatch(pattern, label), f"{entry.key}: bibliography label {label!r}"


def test_book_bibliography_is_mmlibs():
    assert (ROOT / "book" / "references.bib").resolve() == (ROOT / "mmlib" / "references.bib").resolve()


# --- configuration -------------------------------------------------------------------------

def test_book_configuration():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache"
    assert execute["allow_errors"] is False
    assert execute["timeout"] >= 900, "a cell's timeout must survive a machine 10x slower than ours"
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert CONFIG["title"] and CONFIG["author"] and CONFIG["copyright"]


def test_pytest_never_collects_build_copies():
    opts = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "_build" in opts["norecursedirs"]
    assert set(opts["testpaths"]) == {"tests", "book"}
    assert "--nbval-lax" in opts["addopts"]


def test_ci_runs_the_readme_commands():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and "pytest" in commands[1] and "jupyter-book build . -W" in commands[0]
    assert "README.md" in ci.read_text(), ".ci/run should take its commands from the README"


def test_a_build_starts_with_no_stale_failure_reports(tmp_path):
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location(
        "fresh_reports", ROOT / "book" / "_ext" / "fresh_reports.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    stale = tmp_path / "reports" / "02_architecture.err.log"
    stale.parent.mkdir()
    stale.write_text("CellTimeoutError")
    hooks = {}
    app = types.SimpleNamespace(outdir=str(tmp_path),
                                connect=lambda event, f: hooks.setdefault(event, f))
    ext.setup(app)
    hooks["builder-inited"](app)
    assert not stale.exists()
    config = (ROOT / "_config.yml").read_text()
    assert "fresh_reports: book/_ext/" in config


def _benchmark_runner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_run", ROOT / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


def test_the_benchmark_lists_a_chapters_slowest_cells():
    import nbformat

    run = _benchmark_runner()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a chapter")]
    for seconds, source in ((1.5, "fast()"), (30.0, "\n# train\ntrain()"), (4.0, "evaluate()"),
                            (12.25, "plot()")):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-07T10:00:00.000000Z",
                                      "shell.execute_reply": f"2026-12-07T10:00:{seconds:06.3f}Z"}
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell("never_run()"))  # no timings: left out
    slowest = run.slowest_cells(nb)
    assert [(c["cell"], c["seconds"], c["first line"]) for c in slowest] == [
        (2, 30.0, "# train"), (4, 12.2, "plot()"), (3, 4.0, "evaluate()")]


def test_the_speed_line_times_a_fixed_workload():
    run = _benchmark_runner()
    one, more = run.reference_workload(steps=1, repeats=1), run.reference_workload(steps=4, repeats=1)
    assert 0 < one < more, "more steps of the same work take longer"
