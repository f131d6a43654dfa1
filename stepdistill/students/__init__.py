"""Students (and teachers trained here): the models (logistic.py, mlp.py, cnn.py, choice.py), each
returning ``terms.Outputs(logits, rationale)``; their kinds as configured (config.py, no torch)
and the model each kind makes (build.py)."""
