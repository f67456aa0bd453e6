"""`lmtune ui`: a local web app over a directory of runs (runs list, live curves, comparison).
runs.py reads run directories (nothing else touches the disk), pages.py renders HTML, app.py is the
FastAPI app with the token and path rules, static/ holds the page's own CSS and JavaScript."""
