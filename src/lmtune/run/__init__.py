"""The run directory: its layout and atomic writes (layout.py), the files a run leaves behind
(artifacts.py: model card, summary), and the environment record (envinfo.py)."""
