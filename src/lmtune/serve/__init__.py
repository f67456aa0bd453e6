"""`lmtune serve`: an OpenAI-compatible HTTP server over runs and models (see app.py, engine.py)."""

# The largest request body the server takes (lmtune serve --max-request-bytes); kept here, free of
# imports, so the CLI can show it without loading the web stack.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
