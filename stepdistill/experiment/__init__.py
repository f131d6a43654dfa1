"""One experiment loop over tracks: loop.py (runs, labelled fractions, controls, training,
testing), records.py (what runs produce), summary.py (the results dict), checkpoints.py (resume
after an interruption); a track per kind of student: tabular.py (tables, and text records read
through sentence features) and lm.py (generative language models)."""
