"""`lmtune sweep`: an Optuna study over a config whose trials are ordinary `lmtune train` runs.

    space.py    --param specs -> validated parameters (no trial starts on a bad one)
    study.py    RDB storage, the study and its settings, interrupted trials, the trial budget
    trial.py    a worker: ask -> train (pruned on validation loss) -> tell
    results.py  the results table (compare layout), best.yaml, the winner on the test split
    html.py     sweep.html
"""
