"""Every number in the README's tables comes from a committed result file under results/.

The documents checked: README.md, results/README.md and the topic pages that results/README.md
lists under "## Topic pages" (the long results tables moved out of the README). Their markdown
tables are parsed. A table of measurements must name its source: the text
between the previous table or heading and the table cites one or more `results/...` paths
(files, or folders meaning every file in them). Each numeric token of each body row is then
looked up in those files only (json, md, log): as written ("1.72"), or as a number they hold that
rounds to it at the README's precision (a .json's 1.7196 for "1.72"; a time in seconds for a
figure in ms). Tables that state no measurement (options, passes, forms) are skipped by their
first header cell. Numbers derived from a file rather than copied from it are allowed only in
DERIVED, each with the file it is computed from and how; the test checks that file exists and
that the table cites it.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results"
TOPIC_LINK = re.compile(r"\]\(([\w.-]+\.md)\)")


def topic_pages() -> list[Path]:
    """The pages results/README.md lists under "## Topic pages" (markdown links to results/*.md)."""
    text = (RESULTS / "README.md").read_text()
    section = text.split("## Topic pages", 1)[1].split("\n## ", 1)[0]
    return [RESULTS / name for name in TOPIC_LINK.findall(section)]


def documents() -> list[Path]:
    return [README, RESULTS / "README.md", *topic_pages()]

# tables whose first header cell is one of these hold no measurement (option names, defaults,
# the rewrite forms, the steps the returned model takes); their numbers are settings, not figures
NOT_MEASUREMENTS = {"option", "pass", "form", "next step", "file", "page"}   # file, page: results/README.md's indexes

# number token -> (result file it is computed from, how). Keep this short.
DERIVED: dict[str, tuple[str, str]] = {
}

# Whole columns computed from a result file rather than copied: (first header cell, column
# header) -> (the file, how). Their cells are not looked up as tokens; each is recomputed from the
# file by test_derived_columns_are_recomputed_from_their_files.
RUN1 = "results/gpu/2026-11-25-h100/run1/campaign.json"
DERIVED_COLUMNS: dict[tuple[str, str], tuple[str, str]] = {
    ("layer (batch 64)", "vs eager cl"): (RUN1, "times_us.eager_cl / times_us.ours of the layer's fp16 row, 2 decimals"),
}

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:\.\d+)?(?:e[-+]?\d+)?")


SOURCE = re.compile(r"results/[\w./-]*[\w/]")
INDEX = "results/README.md"   # the index of result files, linked from every page: not a source


def tables(text: str):
    """(first header cell, cited result paths, body rows) for every markdown table in text."""
    lines, out, context, i = text.splitlines(), [], [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            context = []
        if not line.startswith("|"):
            context.append(line)
            i += 1
            continue
        rows = []
        while i < len(lines) and lines[i].startswith("|"):
            rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
            i += 1
        header = rows[0][0].strip("` ").lower()
        body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
        cited = set(SOURCE.findall("\n".join(context))) - {INDEX}   # a link to the index cites no figure
        out.append((header, sorted(cited), body, [c.lower() for c in rows[0]]))
        context = []
    return out


def numbers_in(cell: str) -> list[str]:
    cell = re.sub(r"`[^`]*`", "", cell)            # code: names and commands, not figures
    cell = re.sub(r"\b[A-Za-z]+\d+[A-Za-z\d]*\b", "", cell)   # identifiers: H100, C32, H112, B0, V2
    cell = re.sub(r"\d+²", "", cell)               # input sides (224²) are settings
    return [t for t in NUMBER.findall(cell) if not re.fullmatch(r"[-+]?\d", t)]   # single digits: counts like "1 / 64", k3


def source_files(cited: list[str]) -> list[Path]:
    files = []
    for c in cited:
        path = ROOT / c.rstrip("/.")
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in files if p.suffix in (".json", ".md", ".log")]


def result_numbers(files) -> tuple[str, list[float]]:
    text = "\n".join(p.read_text(errors="replace") for p in files)
    values = []
    for t in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?|[-+]?\d+(?:e[-+]?\d+)?", text):
        try:
            values.append(float(t))
        except ValueError:
            pass
    return text, values


def _found(token: str, text: str, values: list[float]) -> bool:
    plain = token.replace(",", "")
    if re.search(rf"(?<![\d.]){re.escape(token)}(?![\d])", text) or re.search(rf"(?<![\d.]){re.escape(plain)}(?![\d])", text):
        return True
    decimals = len(plain.split(".")[1]) if "." in plain and "e" not in plain.lower() else 0
    target = float(plain)
    half = 0.5 * 10 ** -decimals if "e" not in plain.lower() else abs(target) * 0.05
    # a file's raw number that rounds to the README's (ms in a .json may be seconds: x1000 too)
    return any(abs(v - target) <= half + 1e-12 or abs(v * 1e3 - target) <= half + 1e-12 for v in values)


def test_the_topic_pages_exist():
    pages = topic_pages()
    assert len(pages) >= 6 and all(p.is_file() for p in pages), pages


def test_every_table_of_figures_cites_its_result_files():
    for doc in documents():
        for header, cited, body, _ in tables(doc.read_text()):
            if header in NOT_MEASUREMENTS:
                continue
            assert cited, f"{doc.name}: the table starting {header!r} cites no results/ file"
            missing = [c for c in cited if not (ROOT / c.rstrip("/.")).exists()]
            assert not missing, f"{doc.name}: the table starting {header!r} cites missing {missing}"


def test_every_number_in_the_readme_tables_is_in_its_result_files():
    missing = []
    for header, cited, body, columns in (t for doc in documents() for t in tables(doc.read_text())):
        if header in NOT_MEASUREMENTS or not cited:
            continue
        text, values = result_numbers(source_files(cited))
        for cells in body:
            for column, cell in zip(columns, cells):
                if (header, column) in DERIVED_COLUMNS:
                    continue
                for token in numbers_in(cell):
                    derived = DERIVED.get(token)
                    if derived and derived[0] in " ".join(cited) or _found(token, text, values):
                        continue
                    missing.append(f"{token!r} in row {' | '.join(cells)[:90]} (cited: {', '.join(cited)})")
    assert not missing, "README figures not in the result files their table cites:\n" + "\n".join(missing)


def test_derived_columns_are_recomputed_from_their_files():
    import json

    seen = 0
    for header, cited, body, columns in (t for doc in documents() for t in tables(doc.read_text())):
        for column in columns:
            if (header, column) not in DERIVED_COLUMNS:
                continue
            path, _ = DERIVED_COLUMNS[header, column]
            assert path in cited, f"the table starting {header!r} does not cite {path}"
            rows = json.loads((ROOT / path).read_text())["sections"]["layers"]["rows"]
            by_layer = {(r["C"], r["H"], r["k"], r["s"], r["N"]): r for r in rows if r["precision"] == "fp16"}
            i = columns.index(column)
            for cells in body:
                m = re.fullmatch(r"C(\d+) H(\d+) k(\d+)(?: s(\d+))? → (\d+)", cells[0])
                if not m:
                    continue
                c, h, k, stride, n = (int(g) if g else 1 for g in m.groups())
                t = by_layer[c, h, k, stride, n]["times_us"]
                assert f"{t['eager_cl'] / t['ours']:.2f}" == cells[i], f"{cells[0]}: {column} {cells[i]}"
                seen += 1
    assert seen >= 10


def test_derived_numbers_name_an_existing_result_file():
    for token, (path, how) in DERIVED.items():
        assert (ROOT / path).is_file(), f"{token}: {path} does not exist"
        assert how, token


def test_the_check_can_fail():
    text, values = result_numbers(source_files(["results/decisions_cpu.json"]))
    assert _found("19.1", text, values) and not _found("987654.321", text, values)
    assert list(numbers_in("| 3.8 s | 2.8 s | 52 folds, 17 fused |")) == ["3.8", "2.8", "52", "17"]
