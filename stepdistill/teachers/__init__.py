"""Teachers: models whose outputs a student learns from. The adapters (base.py: the interface;
module.py, scikit.py, boosting.py, file.py, llm.py, privileged.py) give logits and rationales by
sample id; collect.py checks and caches them (store.py: on disk between runs); the kinds as
configured (config.py, no torch) and building one (build.py)."""
