"""The documentation is tested: every code block of every page, every example, the site build.

* Every ```` ```python ```` block of ``docs/**/*.md`` runs, page by page: the blocks of one page run
  in order in one namespace (a fresh one per page), in a temporary working directory.
* An HTML comment on the line before a block changes that:

  - ``<!-- skip: reason -->``: the block is not run (for blocks that need a GPU or ``torchrun``);
  - ``<!-- requires: mnist -->``: the block runs only when the MNIST files exist; the test links
    them as ``./data`` in the working directory, so the block reads ``data_dir="data"``;
  - ``<!-- run -->`` before a ```` ```bash ```` block: the block runs through ``bash`` (with
    ``scoresde`` meaning ``python -m scoresde`` of this interpreter). Other shell blocks are not run.

* Every ``examples/*.py`` runs with ``--quick`` and must write its figure; each has a committed
  figure ``docs/figures/<name>.png`` shown on the examples page.
* ``mkdocs build --strict`` must pass (skipped when mkdocs is not installed: ``pip install .[docs]``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
MNIST_PARENT = Path(os.environ.get("SCORESDE_DATA") or "/nonexistent-scoresde-data")  # the data folder, when set
HAS_MNIST = (MNIST_PARENT / "mnist").is_dir()

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^<!--\s*(?P<name>[a-z]+)\s*(?::\s*(?P<arg>.*?))?\s*-->$")
DIRECTIVES = ("skip", "requires", "run")
REQUIREMENTS = ("mnist",)
PYTHON = ("python", "py", "python3")
SHELL = ("bash", "sh", "console", "shell")


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directive: Optional[str] = None
    arg: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def extract_blocks(page: Path) -> List[Block]:
    """The fenced code blocks of a markdown page, with the directive (if any) on the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group("indent")), m.group("fence"), m.group("info").strip()
        lang = re.split(r"[\s{]", info, maxsplit=1)[0].lower() if info else ""
        body, j = [], i + 1
        while j < len(lines):
            c = _FENCE.match(lines[j])
            closes = c and c.group("fence")[0] == fence[0] and len(c.group("fence")) >= len(fence)
            if closes and not c.group("info").strip():
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        else:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        d = _DIRECTIVE.match(lines[k].strip()) if k >= 0 else None
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n", d.group("name") if d else None,
                            d.group("arg") if d else None))
        i = j + 1
    return blocks


def doc_pages() -> List[Path]:
    """The docs pages with prose and code (the API pages hold only directives), and the README."""
    return sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts) + [ROOT / "README.md"]


def runnable(block: Block) -> bool:
    return block.lang in PYTHON or (block.lang in SHELL and block.directive == "run")


PAGES = [p for p in doc_pages() if any(runnable(b) for b in extract_blocks(p))]


# --------------------------------------------------------------------------- structure
def test_pages_have_code_and_directives_are_valid():
    assert PAGES, "no documentation page with code blocks found"
    n_python = skipped = 0
    for page in doc_pages():
        for b in extract_blocks(page):
            if b.directive is None:
                n_python += b.lang in PYTHON
                continue
            assert b.directive in DIRECTIVES, f"{b.where}: unknown directive {b.directive!r}; valid: {DIRECTIVES}"
            if b.directive == "skip":
                assert b.arg, f"{b.where}: <!-- skip: reason --> needs a reason"
                skipped += 1
            if b.directive == "requires":
                assert b.arg in REQUIREMENTS, f"{b.where}: unknown requirement {b.arg!r}; valid: {REQUIREMENTS}"
                assert b.lang in PYTHON, f"{b.where}: 'requires' applies to python blocks"
            if b.directive == "run":
                assert b.lang in SHELL, f"{b.where}: 'run' applies to shell blocks (python blocks always run)"
            n_python += b.lang in PYTHON
    assert n_python >= 20, f"only {n_python} python blocks in the docs"
    assert skipped <= 5, f"{skipped} skipped blocks: skip sparingly"


def test_extract_blocks_reads_fences_and_directives(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(textwrap.dedent("""\
        text
        <!-- skip: needs a GPU -->
        ```python title="a.py"
        x = 1
        ```

        !!! note
            ```python
            y = 2
            ```
        ```bash
        echo hi
        ```
        """))
    blocks = extract_blocks(page)
    assert [(b.lang, b.code, b.directive, b.arg) for b in blocks] == [
        ("python", "x = 1\n", "skip", "needs a GPU"),
        ("python", "y = 2\n", None, None),
        ("bash", "echo hi\n", None, None),
    ]


# --------------------------------------------------------------------------- running the pages
def _run_shell(block: Block, cwd: Path) -> None:
    prelude = f'scoresde() {{ "{sys.executable}" -m scoresde "$@"; }}\n'
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + block.code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"{block.where}: shell block failed (exit {proc.returncode}):\n{block.code}\n"
                    f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if HAS_MNIST:
        (tmp_path / "data").symlink_to(MNIST_PARENT, target_is_directory=True)
    namespace = {"__name__": "__main__"}
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    not_run = []
    try:
        for block in extract_blocks(page):
            if not runnable(block) or block.directive == "skip":
                continue
            if block.directive == "requires" and block.arg == "mnist" and not HAS_MNIST:
                not_run.append(block.where)
                continue
            if block.lang in SHELL:
                _run_shell(block, tmp_path)
                continue
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as e:
                raise AssertionError(
                    f"{block.where}: code block failed with {type(e).__name__}: {e}\n{block.code}") from e
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    if not_run:
        print(f"not run (MNIST not found under {MNIST_PARENT}): {', '.join(not_run)}")


# --------------------------------------------------------------------------- examples
EXAMPLE_SCRIPTS = sorted(EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS, ids=[p.stem for p in EXAMPLE_SCRIPTS])
def test_example_runs_quick(script, tmp_path):
    out = tmp_path / f"{script.stem}.png"
    cmd = [sys.executable, str(script), "--quick", "--out", str(out)]
    needs_mnist = script.stem.startswith("mnist")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    if needs_mnist and not HAS_MNIST:
        # without data the example fails loudly (status 1, a message naming --data-dir and SCORESDE_DATA)
        env.pop("SCORESDE_DATA", None)
        proc = subprocess.run(cmd + ["--data-dir", str(tmp_path / "no-data")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "SCORESDE_DATA" in proc.stderr and not out.exists(), proc.stderr
        pytest.skip("MNIST not found (set SCORESDE_DATA); checked that the example fails loudly without it")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert out.is_file() and out.stat().st_size > 10_000, f"{script.name} wrote no figure"


def test_every_example_has_a_committed_figure_shown_in_the_docs():
    gallery = (DOCS / "examples.md").read_text(encoding="utf-8")
    assert EXAMPLE_SCRIPTS
    for script in EXAMPLE_SCRIPTS:
        figure = DOCS / "figures" / f"{script.stem}.png"
        where = figure.relative_to(ROOT)
        assert figure.is_file(), f"{where} is missing: run python examples/{script.name} --out {where}"
        assert f"figures/{script.stem}.png" in gallery, f"docs/examples.md does not show {figure.name}"
        assert f"python examples/{script.name}" in gallery, f"docs/examples.md does not say how to run {script.name}"


def _gen_figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_figures", DOCS / "gen_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_copies(md: Path, png: Path, sections: dict, figure: str, target: str, page: Optional[str] = None) -> None:
    """The snippets and the figure in docs/ are the current copies of a benchmark report ``md`` and plot ``png``
    (``gen_figures.py target`` makes them), and ``page`` (under docs/) includes them."""
    gen = _gen_figures()
    if not (md.is_file() and png.is_file()):
        pytest.skip(f"no {md.name} or {png.name} in benchmarks/results")
    report = md.read_text(encoding="utf-8")
    stale = f"stale copy of {md.name}: run python docs/gen_figures.py {target}"
    text = (DOCS / page).read_text(encoding="utf-8") if page else None
    for title, name in sections.items():
        assert (gen.SNIPPETS / name).read_text(encoding="utf-8") == gen.report_section(report, title), stale
        assert text is None or f"docs/snippets/{name}" in text, f"{page} does not include {name}"
    assert (gen.FIGURES / figure).read_bytes() == png.read_bytes(), stale
    assert text is None or f"figures/{figure}" in text, f"{page} does not show {figure}"


def test_benchmark_copies_in_the_docs_match_the_results():
    gen = _gen_figures()
    _check_copies(gen.BENCH_MD, gen.BENCH_PNG, gen.SECTIONS, "benchmark_quality_vs_nfe.png", "benchmark")


def test_fewstep_benchmark_copies_in_the_docs_match_the_results():
    gen = _gen_figures()
    _check_copies(gen.FEWSTEP_MD, gen.FEWSTEP_PNG, gen.FEWSTEP_SECTIONS, gen.FEWSTEP_FIGURE, "benchmark",
                  "choosing-a-solver.md")


def test_families_copies_in_the_docs_match_the_results():
    gen = _gen_figures()
    _check_copies(gen.FAMILIES_MD, gen.FAMILIES_PNG, gen.FAMILIES_SECTIONS, "families_cpu.png", "families", "families.md")


def test_report_section_extracts_one_section():
    report = "# r\n\n## A\n\n![plot](a.png)\n\n| x |\n|---|\n\n## B\n\nb\n"
    assert _gen_figures().report_section(report, "A") == "| x |\n|---|\n"
    assert _gen_figures().report_section(report, "B") == "b\n"


# --------------------------------------------------------------------------- the site
def _documented_objects() -> set:
    """ids of the objects the API reference renders (``::: path`` directives and their members)."""
    import importlib
    import inspect

    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((DOCS / "api").glob("*.md")))
    ids = set()
    for m in re.finditer(r"^::: ([\w.]+)\n((?:[ ]{4}.*\n)*)", text + "\n", re.M):
        path, options = m.group(1), m.group(2)
        parts = path.split(".")
        for i in range(len(parts), 0, -1):  # longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            break
        ids.add(id(obj))
        if inspect.ismodule(obj):
            members = re.findall(r"^\s+- (\w+)\s*$", options, re.M) or [
                n for n in getattr(obj, "__all__", dir(obj)) if not n.startswith("_")]
            ids |= {id(getattr(obj, n)) for n in members if hasattr(obj, n)}
    return ids


def test_api_reference_covers_the_public_api():
    import inspect

    import scoresde

    documented = _documented_objects()
    missing = [n for n in scoresde.__all__
               if (inspect.isclass(getattr(scoresde, n)) or inspect.isfunction(getattr(scoresde, n)))
               and id(getattr(scoresde, n)) not in documented]
    assert not missing, f"public names missing from docs/api/*.md: {missing}"



def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install .[docs])")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install .[docs])")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install .[docs])")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert (tmp_path / "site" / "index.html").is_file()
    if shutil.which("git") and (ROOT / ".git").exists():  # the build must not write into the working tree
        assert not (ROOT / "docs" / "site").exists()
    check_site_works_offline(tmp_path / "site")


#: A resource the browser fetches on its own (not a link the reader follows) from another host.
_REMOTE_LOAD = re.compile(r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*"
                          r"[\"']?((?:https?:)?//[^\"'\s>]+)", re.I)
_REMOTE_CSS = re.compile(r"(?:@import\s*(?:url\()?|url\()\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.I)
_HREF = re.compile(r"<a\b[^>]*?\bhref=\"([^\"]*)\"", re.I)


def check_site_works_offline(site: Path) -> None:
    """The built site loads nothing from the network, shows its equations as MathML, and links pages as files."""
    pages = sorted(site.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(site)
        remote = _REMOTE_LOAD.findall(text) + _REMOTE_CSS.findall(text)
        assert not remote, f"{where} loads from the network: {remote[:5]}"
        # every formula was rendered when the site was built: no TeX left for a script to typeset
        assert not re.search(r'class="arithmatex">\s*\\[(\[]', text), f"{where} has unrendered TeX"
        for href in _HREF.findall(text):  # internal links name files (a directory URL opens a listing from disk)
            if href.startswith(("http:", "https:", "mailto:", "#", "data:")):
                continue
            target = href.split("#")[0]
            assert not target or not target.endswith("/"), f"{where} links to a directory: {href}"
    for css in site.rglob("*.css"):
        remote = _REMOTE_CSS.findall(css.read_text(encoding="utf-8", errors="replace"))
        assert not remote, f"{css.relative_to(site)} loads from the network: {remote[:5]}"
    concepts = (site / "concepts.html").read_text(encoding="utf-8")
    assert concepts.count("<math") >= 10 and "<msub>" in concepts, "the concepts page shows no rendered equations"
    api = (site / "api" / "likelihood.html").read_text(encoding="utf-8")
    assert "<blockquote>" not in api and "&gt;&gt;&gt;" in api, "docstring examples are not rendered as code"
