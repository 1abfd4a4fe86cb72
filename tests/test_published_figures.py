"""Every measured figure in README.md and docs/ is checked against its results file.

A block of a page (a paragraph, a list item, a table, a block quote) that quotes measured
figures names its sources in an HTML comment, invisible on GitHub and in the Sphinx site, on
the line just before it (or inside it)::

    <!-- figures: benchmarks/results/combinations.md#mean-over-pairs-and-seeds -->
    <!-- figures: benchmarks/results/speed.md; not: 2.5 (an argument) -->
    <!-- figures: none; not: 0.5 0.8 (arguments of the API) -->
    <!-- figures: none; unrecorded: 1.96 2.07 (timed once by hand) -->

Sources are results files under ``benchmarks/results/`` (``.md`` or ``.csv``; a ``.md`` one
can be narrowed to the section under one heading by that heading's anchor,
``#mean-over-pairs-and-seeds``) or a committed notebook (``tutorials/*.ipynb``: the text of
its outputs). ``not:`` lists the decimals of the block that are not measurements (arguments,
thresholds, versions, arithmetic), with the reason in parentheses; ``unrecorded:`` lists
measurements that no results file holds (a one-off measurement kept only in the text), with
the reason, and the block must then say "no results file" where readers see it; ``none`` says
the block has no source, so every decimal in it must be listed in one of the two.

Every decimal figure of a block (``0.467``, ``1,827.7``, ``2.03x``, ``5.317e4``) and every
percentage must appear in one of its sources at the precision printed: a figure ``x`` with
``d`` decimals matches a value ``y`` of the source when ``y`` rounded to ``d`` decimals (half
up or half to even) is ``x``; signs are ignored, and a percentage also matches a fraction
(``12%`` and ``0.12``). A decimal outside any marked block fails, and so do an exclusion that
does not occur in its block, a marker on a block without figures and a source that does not
exist. Fenced code, inline code, HTML comments and link targets are not read.

The check is that each figure is *in* its source, not that it is the right one of the
source's values: a stale figure that happens to equal another value of the same source
passes. Narrowing a large source to a section makes that rarer.

Pages: README.md and docs/*.md. The tutorials (``tutorials/*.ipynb``, rendered in the docs)
are checked against themselves: every figure of their text must be in their outputs, or in
``NOT_IN_OUTPUTS`` with its reason. Not checked: ``CHANGELOG.md`` (shown in the docs through
``docs/changelog.md``), whose entries record what each change measured when it was made and
are not rewritten afterwards.

Every results file also names the command that wrote it and the commit it ran at
(``test_results_files_name_command_and_commit``; the benchmarks write both through
``benchmarks/_provenance.py``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "results"

MARKER = re.compile(r"<!--\s*figures:(.*?)-->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
FENCE = re.compile(r"^ {0,3}(```|~~~)")
# What interrupts a paragraph (CommonMark): a bullet, an ordered item numbered 1, a heading.
STARTS_BLOCK = re.compile(r"^ {0,3}(?:[-*+] |1[.)] |#{1,6}(?:\s|$))")
ORDERED_ITEM = re.compile(r"^ {0,3}\d+[.)] ")
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
# A decimal or a percentage, not part of a version (1.4.2), a name (H4C3) or a longer number.
FIGURE = re.compile(
    r"(?<![\w.,])(\d+(?:\.\d+)?%|(?:\d{1,3}(?:,\d{3})+|\d+)\.\d+(?:e[-+]?\d+)?)(?![.,]?\d)"
)
# Any number of a results file (thousands separators only in Markdown prose).
VALUE_MD = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(%?)"
)
VALUE_CELL = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(%?)")
#: What a block with ``unrecorded:`` figures must say where readers see it.
UNRECORDED_NOTE = "no results file"
HEADING = re.compile(r"^(#+)\s+(.*?)\s*#*\s*$")


@dataclass
class Block:
    """Lines of one page between blank lines (a list item, a heading or a marker starts one)."""

    page: str
    line: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def split_blocks(text: str, page: str) -> list[Block]:
    """The blocks of a Markdown page, fenced code left out; a marker line opens a block."""
    blocks: list[Block] = []
    current: Block | None = None
    in_fence = in_comment = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not in_comment and FENCE.match(line):
            in_fence = not in_fence
            current = None
            continue
        if in_fence:
            continue
        if in_comment:
            current.lines.append(line)
            in_comment = "-->" not in line
            continue
        if not line.strip():
            current = None
            continue
        comment = line.lstrip().startswith("<!--")
        # A comment line opens the block it marks; a list item or a heading opens its own,
        # unless it follows such a comment.
        if (
            current is None
            or (comment and not _only_comments(current))
            or (_starts_block(line, current) and not _only_comments(current))
        ):
            current = Block(page, number)
            blocks.append(current)
        current.lines.append(line)
        in_comment = comment and "-->" not in line
    return blocks


def _starts_block(line: str, current: Block) -> bool:
    """A list item or a heading; a later item of an ordered list only after another item."""
    if STARTS_BLOCK.match(line):
        return True
    return bool(ORDERED_ITEM.match(line)) and any(map(ORDERED_ITEM.match, current.lines))


def _only_comments(block: Block) -> bool:
    return not COMMENT.sub("", block.text).strip()


def figures(text: str) -> list[str]:
    """Decimal figures and percentages of a block, as printed (commas and signs dropped)."""
    text = COMMENT.sub(" ", text)
    text = INLINE_CODE.sub(" ", text)
    text = LINK_TARGET.sub("]", text)
    return [match.replace(",", "") for match in FIGURE.findall(text)]


@dataclass
class Marker:
    sources: list[str]
    excluded: list[str]  # not measurements
    unrecorded: list[str]  # measurements that no results file holds
    problems: list[str]


def parse_marker(block: Block) -> Marker | None:
    found = MARKER.findall(block.text)
    if not found:
        return None
    sources, problems = [], []
    lists: dict[str, list[str]] = {"not": [], "unrecorded": []}
    for body in found:
        head, *clauses = body.split(";")
        names = head.split()
        if names != ["none"]:
            sources += names
        for clause in map(str.strip, clauses):
            kind, colon, tokens = clause.partition(":")
            if kind not in lists or not colon:
                problems.append(
                    f"cannot read {clause!r} (expected 'not: FIGURES (reason)' or "
                    "'unrecorded: FIGURES (reason)')"
                )
                continue
            if "(" not in tokens:
                problems.append(f"'{kind}:' without a reason in parentheses: {clause!r}")
            lists[kind] += _without_reasons(tokens).split()
    for source in sources:
        path = ROOT / source.partition("#")[0]
        allowed = path.is_relative_to(RESULTS) or (
            path.parent == ROOT / "tutorials" and path.suffix == ".ipynb"
        )
        if not allowed:
            problems.append(f"{source}: not a results file or a tutorial notebook")
        elif not path.is_file():
            problems.append(f"{source}: no such file")
    return Marker(sources, lists["not"], lists["unrecorded"], problems)


def _without_reasons(tokens: str) -> str:
    """The tokens of a clause, its reasons in (possibly nested) parentheses removed."""
    while True:
        shorter = re.sub(r"\([^()]*\)", " ", tokens)
        if shorter == tokens:
            return tokens
        tokens = shorter


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _section(text: str, anchor: str, source: str) -> str:
    lines = text.splitlines()
    for start, line in enumerate(lines):
        heading = HEADING.match(line)
        if heading and _slug(heading.group(2)) == anchor:
            level = len(heading.group(1))
            end = next(
                (
                    i
                    for i in range(start + 1, len(lines))
                    if (h := HEADING.match(lines[i])) and len(h.group(1)) <= level
                ),
                len(lines),
            )
            return "\n".join(lines[start:end])
    raise ValueError(f"{source}: no heading with the anchor #{anchor}")


def _notebook_outputs(path: Path) -> str:
    texts = []
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            data = output.get("data", {})
            for kind in ("text/plain", "text/markdown"):
                texts.append("".join(data.get(kind, "")))
    return "\n".join(texts)


@cache
def source_values(source: str) -> tuple[frozenset[Decimal], frozenset[Decimal]]:
    """Every number of a source, as plain values and as percentages (12% → 12 and 0.12)."""
    name, _, anchor = source.partition("#")
    path = ROOT / name
    found: list[tuple[str, str]] = []
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            for row in csv.reader(handle):
                for cell in row:
                    found += VALUE_CELL.findall(cell)
    else:
        text = _notebook_outputs(path) if path.suffix == ".ipynb" else path.read_text()
        if anchor:
            text = _section(text, anchor, source)
        found = VALUE_MD.findall(text)
    plain, percent = set(), set()
    for number, sign in found:
        value = Decimal(number.replace(",", ""))
        plain.add(value)
        if sign:
            percent.add(value)
            plain.add(value / 100)
    percent |= {value * 100 for value in plain}
    return frozenset(plain), frozenset(percent)


@cache
def _rounded(source: str, exponent: int, as_percent: bool) -> frozenset[Decimal]:
    plain, percent = source_values(source)
    quantum = Decimal(1).scaleb(exponent)
    out = set()
    for value in percent if as_percent else plain:
        for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN):
            try:
                out.add(value.quantize(quantum, rounding=rounding))
            except InvalidOperation:  # far too large for this precision: cannot match
                pass
    return frozenset(out)


def matches(figure: str, sources: list[str]) -> bool:
    """Whether a figure of a page is one of its sources' values at the precision printed."""
    as_percent = figure.endswith("%")
    value = Decimal(figure.rstrip("%"))
    exponent = value.as_tuple().exponent
    return any(value in _rounded(source, exponent, as_percent) for source in sources)


def check_page(text: str, page: str) -> list[str]:
    """Every problem of one page: figures without a marker or not in their sources."""
    problems = []
    for block in split_blocks(text, page):
        where = f"{page}:{block.line}"
        found = figures(block.text)
        marker = parse_marker(block)
        if marker is None:
            if found:
                problems.append(f"{where}: figures {found} without a '<!-- figures: -->' marker")
            continue
        problems += [f"{where}: {problem}" for problem in marker.problems]
        if marker.problems:
            continue
        if not found:
            problems.append(f"{where}: a figures marker on a block without figures")
        for token in marker.excluded + marker.unrecorded:
            if token.replace(",", "") not in found:
                problems.append(f"{where}: excluded {token} does not occur in the block")
        if marker.unrecorded and UNRECORDED_NOTE not in " ".join(
            COMMENT.sub(" ", block.text).split()
        ):
            problems.append(
                f"{where}: unrecorded figures, but the text does not say '{UNRECORDED_NOTE}'"
            )
        skipped = {t.replace(",", "") for t in marker.excluded + marker.unrecorded}
        checked = [f for f in found if f not in skipped]
        if checked and not marker.sources:
            problems.append(f"{where}: figures {checked} with no source ('none')")
            continue
        missing = [f for f in checked if not matches(f, marker.sources)]
        if missing:
            problems.append(f"{where}: {missing} not in {' '.join(marker.sources)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_published_figures_match_their_results_files(page):
    problems = check_page(page.read_text(), str(page.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


# --- the tutorials' text against their own outputs ---------------------------------------------

NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
#: Figures of a tutorial's text that are not in its text outputs, with the reason.
NOT_IN_OUTPUTS = {
    "01_simulation.ipynb": {
        "90%": "the share of training cells, a setting",
        "0.73 0.23 0.74": "read from the matched-latents figure, an image output",
    },
    "02_norman2019.ipynb": {
        "0.34 0.35 2.52 3.79": "differences of the per-cluster NLLs of the table above it",
    },
}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_tutorial_text_matches_its_outputs(notebook):
    """The committed notebooks (rendered in the docs) quote figures of their own outputs."""
    source = str(notebook.relative_to(ROOT))
    allowed = {
        token: reason
        for tokens, reason in NOT_IN_OUTPUTS.get(notebook.name, {}).items()
        for token in tokens.split()
    }
    cells = json.loads(notebook.read_text())["cells"]
    found = set()
    problems = []
    for number, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for figure in figures(text):
            found.add(figure)
            if figure not in allowed and not matches(figure, [source]):
                problems.append(f"{notebook.name}, cell {number}: {figure} not in its outputs")
    problems += [
        f"{notebook.name}: allowed {token} does not occur in its text"
        for token in allowed
        if token not in found
    ]
    assert not problems, "\n".join(problems)


# --- the checker fails where it should -------------------------------------------------------

_COMBINATIONS = "<!-- figures: benchmarks/results/combinations.md#mean-over-pairs-and-seeds -->"


def test_a_figure_that_differs_from_its_results_file_fails():
    # the additive baseline's figures: observed data only, they move with the protocol alone
    good = (
        f"{_COMBINATIONS}\nThe additive baseline reaches 0.721 (all genes) / 0.863 (top 20 DE).\n"
    )
    assert check_page(good, "page") == []
    doctored = good.replace("0.863", "0.86")
    assert check_page(doctored, "page") == []  # the same figure, printed at lower precision
    doctored = good.replace("0.863", "0.123")  # a stale figure
    problems = check_page(doctored, "page")
    assert len(problems) == 1 and "['0.123']" in problems[0]


def test_the_readme_with_a_stale_figure_fails():
    readme = (ROOT / "README.md").read_text()
    assert "0.863" in readme
    problems = check_page(readme.replace("0.863", "0.123"), "README.md")
    assert any("0.123" in problem for problem in problems), problems


def test_unmarked_figures_and_stale_markers_fail():
    assert "without a" in check_page("sVAE+ reaches MCC 0.956.\n", "page")[0]
    assert "12%" in check_page("It is 12% faster.\n", "page")[0]
    assert check_page("`x = 0.5` in code, [a link](v0.1.2), version 1.4.2.\n", "page") == []
    assert check_page("```\nloss 0.123\n```\n", "page") == []
    problems = check_page("<!-- figures: none; not: 0.5 (an argument) -->\nno figure\n", "p")
    assert any("without figures" in problem for problem in problems), problems
    problems = check_page("<!-- figures: none; not: 0.8 (an argument) -->\nat 0.5\n", "p")
    assert any("0.8 does not occur" in problem for problem in problems), problems
    assert any("no source" in problem for problem in problems), problems
    (problem,) = check_page("<!-- figures: none; not: 0.5 -->\nat 0.5\n", "p")
    assert "reason" in problem
    unrecorded = "<!-- figures: none; unrecorded: 1.96 (timed once) -->\nIt took 1.96 s"
    assert "does not say" in check_page(unrecorded + ".\n", "p")[0]
    assert check_page(unrecorded + " (no results file).\n", "p") == []
    (problem,) = check_page("<!-- figures: README.md -->\nat 0.5\n", "p")
    assert "not a results file" in problem
    (problem,) = check_page("<!-- figures: benchmarks/results/nothing.md -->\n0.5\n", "p")
    assert "no such file" in problem


def test_markers_attach_to_the_next_block_and_list_items_split():
    page = (
        "- first item 0.721\n"
        f"{_COMBINATIONS}\n"
        "- second item 0.863 and 0.281\n"
        "\n"
        "| a | b |\n|---|---|\n| 0.721 | 0.863 |\n"
    )
    problems = check_page(page, "page")
    assert len(problems) == 2, problems
    assert "page:1" in problems[0] and "page:5" in problems[1]


def test_matching_rounds_at_the_printed_precision():
    source = ["benchmarks/results/combinations.md#mean-over-pairs-and-seeds"]
    assert matches("0.72", source)  # 0.721, the additive baseline
    assert matches("0.28", source)  # 0.281
    assert not matches("0.722", source)
    assert matches("72.1%", source)  # 0.721 as a percentage
    speed = ["benchmarks/results/speed.md"]
    assert matches("1.69", speed) and matches("2.03", speed)
    with pytest.raises(ValueError, match="no heading"):
        matches("0.5", ["benchmarks/results/combinations.md#no-such-section"])


# --- results files say how they were made ----------------------------------------------------

COMMAND = re.compile(r"`(?:python benchmarks/\w+\.py|sparsevae \w+)[^`]*`")
COMMIT = re.compile(r"\bcommit `?[0-9a-f]{7,40}\b")


def _results_markdown() -> list[Path]:
    return sorted(p for p in RESULTS.rglob("*.md") if p.name != "README.md")


@pytest.mark.parametrize("path", _results_markdown(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_results_files_name_command_and_commit(path):
    """The file, or the README.md of its folder, names its command and its commit."""
    text = path.read_text()
    readme = path.parent / "README.md"
    if path.parent != RESULTS and readme.is_file():
        text += readme.read_text()
    assert COMMAND.search(text), f"{path.name}: no `python benchmarks/...` command"
    assert COMMIT.search(text), f"{path.name}: no 'commit <hash>'"
