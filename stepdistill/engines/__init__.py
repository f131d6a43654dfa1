"""Engines: the one ``fit`` loop and ``TrainState`` (base.py) over the engines that train students
epoch by epoch: ``tabular`` (the stacked linear engine and the autograd engine, for numeric
tables) and ``lm`` (generative language models), under the same methods (terms, weight
schedules, balancers)."""
