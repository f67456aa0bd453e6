"""Helpers for scripts/build_base.py: corpus, tokenizer, model, pretraining, checks.

Nothing here is imported by the lmtune package; the result (a directory in Hugging Face layout)
is what lmtune ships and loads.
"""
