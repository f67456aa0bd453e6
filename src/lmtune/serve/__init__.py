"""`lmtune serve`: an OpenAI-compatible HTTP server over runs and models (see app.py, engine.py)."""
