"""Generative (language-model) students: their config (config.py), prompts (prompts.py), models
(models.py, smollm2.py: the bundled SmolLM2-135M-Instruct), evaluation by what they write
(evaluate.py) and prediction from a saved student (predict.py). The engine that trains them is
engines/lm.py; the experiment's language-model track is experiment/lm.py."""
