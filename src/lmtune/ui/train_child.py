"""`python -m lmtune.ui.train_child ARGS`: `lmtune train ARGS` as the UI starts it, with Ctrl-C
restored. A UI started in the background (`lmtune ui &` from a script, nohup) has SIGINT ignored;
every child inherits an ignored signal across exec and Python keeps it ignored, so the UI's stop
(SIGINT to the run's process group) would do nothing. Handlers, unlike SIG_IGN, reset on exec, so
the run's own workers (torchrun) start with the default again."""

from __future__ import annotations

import signal
import sys

from lmtune.cli import main

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main(["train", *sys.argv[1:]]))
