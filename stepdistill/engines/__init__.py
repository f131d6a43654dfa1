"""Engines that train students the tabular trainer (train.py) does not: ``lm``, generative
language models, under the same methods (terms, weight schedules, balancers)."""
