"""The shipped docs stay true to the code: every "docs/methods.md §N.M" a docstring cites is a
section there, and every source file and test file the docs name exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _sections() -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", (DOCS / "methods.md").read_text(), re.M)
    return set(heads)


def _citations() -> dict[str, list[str]]:
    """Section number -> where it is cited (ranges like 1.2-1.4 and lists like 2.1, 2.3 expanded)."""
    cited: dict[str, list[str]] = {}
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "README.md",
             *(ROOT / "benchmarks").glob("*.py")]
    for path in files:
        for m in re.finditer(r"docs/methods\.md\s+§(\d+(?:\.\d+)?)((?:-\d+\.\d+)?)((?:, \d+\.\d+)*)", path.read_text()):
            first, rng, more = m.group(1), m.group(2), m.group(3)
            numbers = [first, *re.findall(r"\d+\.\d+", more)]
            if rng:
                major, lo = first.split(".")
                hi = rng[1:].split(".")[1]
                numbers += [f"{major}.{k}" for k in range(int(lo), int(hi) + 1)]
            for n in numbers:
                cited.setdefault(n, []).append(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_section_exists():
    cited, sections = _citations(), _sections()
    assert len(cited) >= 10, "the docstrings cite docs/methods.md"
    missing = {n: where for n, where in cited.items() if n not in sections}
    assert not missing, f"cited sections absent from docs/methods.md: {missing}"


def test_files_named_in_the_docs_exist():
    named = set()
    for doc in DOCS.glob("*.md"):
        named |= set(re.findall(r"`((?:avssl|tests|benchmarks)/[\w/]+\.(?:py|yaml))`", doc.read_text()))
    assert named, "the docs name source files"
    missing = sorted(p for p in named if not ((ROOT / "src" / p).exists() or (ROOT / p).exists()))
    assert not missing, f"files named in docs/ that do not exist: {missing}"


def test_names_placed_in_a_file_are_defined_there():
    """``name`` (``avssl/x/y.py``) in the docs: ``y.py`` defines ``name``."""
    text = "".join(doc.read_text() for doc in DOCS.glob("*.md"))
    pairs = set(re.findall(r"`(\w+)`(?:,? [^`\n]{0,30})?\(`(avssl/[\w/]+\.py)`", text))
    assert pairs
    wrong = []
    for name, rel in sorted(pairs):
        path = ROOT / "src" / rel
        source = path.read_text() if path.exists() else ""
        if not re.search(rf"^\s*(def|class) {name}\b|^{name}\s*[:=]|^\s+{name}:\s", source, re.M):
            wrong.append(f"{name} is not defined in {rel}")
    assert not wrong, "\n".join(wrong)
