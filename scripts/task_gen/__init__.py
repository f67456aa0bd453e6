"""Generators of the bundled task files (text-to-SQL, JSON extraction, the general-text probe),
run by scripts/build_tasks.py. Build-time only: nothing here is imported by the lmtune package,
which ships and reads the files they write (src/lmtune/assets/tasks/)."""
