"""Every relative link in README.md, docs/*.md and benchmarks/README.md points at a file that
exists, and every #anchor at a heading of that file (GitHub's heading ids)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text: str):
    """The lines outside fenced code blocks (a `# comment` in a bash block is not a heading)."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def heading_ids(text: str) -> set[str]:
    """GitHub's ids: lower case, punctuation but '-' and '_' dropped, spaces -> '-', repeats get -1, -2."""
    ids, seen = set(), {}
    for line in _prose_lines(text):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def broken_links(md: Path) -> list[str]:
    problems = []
    for line in _prose_lines(md.read_text(encoding="utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                problems.append(f"{md.relative_to(ROOT)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in heading_ids(dest.read_text(encoding="utf-8")):
                problems.append(f"{md.relative_to(ROOT)}: {target}: no heading #{anchor} in {path or md.name}")
    return problems


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_and_anchor_resolves():
    problems = [p for md in _documents() for p in broken_links(md)]
    assert problems == []


def test_every_doc_is_listed_in_the_docs_index():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    assert {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"} <= listed


def test_the_readme_stays_a_short_read():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_the_checker_reports_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("## Set-up: `lmtune` (fast)\n```bash\n# not a heading\n```\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md#set-up-lmtune-fast) [gone](c.md) [bad](a.md#not-a-heading) "
                   "`[code](x.md)` [web](https://example.com/x.md)\n", encoding="utf-8")
    assert broken_links(doc) == ["b.md: c.md: no such file", "b.md: a.md#not-a-heading: no heading #not-a-heading in a.md"]
