"""Learning from the task's own checker: GRPO's rewards (rewards.py), its prompt data (prompts.py)
and preference pairs sampled from a run and scored by the task (pairs.py)."""
