"""Reports on finished runs: one run (build.py), several runs side by side (compare.py), and the
shared HTML pieces (html.py)."""
