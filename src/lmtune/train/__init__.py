"""Training: the recipe (recipe.py: config -> data -> model -> trainer -> saved run), the trainer
(trainer.py), its callbacks, resume, the automatic hyperparameters, the fine-tuning methods
(methods/), and the process/CPU setup (processes.py, distributed.py, cpu_tuning.py).

The entry point is lmtune.train.recipe.train; this package imports nothing itself so that
`lmtune --help` and the light commands never load torch through it."""
