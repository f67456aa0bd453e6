"""Offline English/technical text from the running interpreter's standard library.

Docstrings, comment paragraphs and the language reference topics. Docstrings are read from source with `ast` (never by importing: some stdlib modules are slow,
print, open windows or change global state when imported). The language reference topics in
`pydoc_data/topics.py` are read the same way. Files are visited in sorted order, so the same
interpreter always yields the same documents.
"""

from __future__ import annotations

import ast
import re
import inspect
import sysconfig
from pathlib import Path

# Test suites and GUI demos are mostly code or noise, not prose; site-packages is not stdlib.
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
               "turtledemo", "lib2to3", "ensurepip", "pydoc_data"}
_MIN_CHARS = 80   # one-line docstrings ("Return self.") teach little and skew toward boilerplate


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstrings(tree: ast.Module) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= _MIN_CHARS:
                out.append(doc.strip())
    return out


_COMMENT = re.compile(r"^[ \t]*#+ ?(.*)$")


def _comment_blocks(source: str) -> list[str]:
    """Runs of whole-line comments joined into paragraphs; mostly prose explaining why code is
    the way it is. Commented-out code and ASCII art are dropped by the letters-and-spaces ratio."""
    blocks, cur = [], []
    for line in source.splitlines() + [""]:
        m = _COMMENT.match(line)
        if m:
            cur.append(m.group(1).strip())
            continue
        text = " ".join(x for x in cur if x)
        cur = []
        if len(text) >= _MIN_CHARS and sum(c.isalpha() or c == " " for c in text) / len(text) > 0.85:
            blocks.append(text)
    return blocks


def _topics(root: Path) -> list[str]:
    """The language reference pages (pydoc's `help('FOR')` text): a dict literal of str."""
    path = root / "pydoc_data" / "topics.py"
    if not path.exists():
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            values = [v.value for v in node.value.values if isinstance(v, ast.Constant)]
            return [inspect.cleandoc(v) for k, v in sorted(zip(node.value.keys, values),
                                                           key=lambda kv: kv[0].value)]
    return []


def collect(root: Path | None = None) -> list[dict]:
    """Return documents as {"source": "stdlib:<relpath>", "text": ...}, in a fixed order."""
    root = root or stdlib_root()
    docs: list[dict] = [{"source": "stdlib:pydoc_data/topics.py", "text": t} for t in _topics(root)]
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are templates or in legacy encodings
        for text in _docstrings(tree) + _comment_blocks(source):
            docs.append({"source": f"stdlib:{rel.as_posix()}", "text": text})
    return docs
