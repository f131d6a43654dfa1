"""``stepdistill lm-teach``: a large language model writes a rationale and a label for every record
(config.py: the settings; templates.py: the few-shot prompts; backends.py: a local transformers
model or an OpenAI-compatible server; store.py: the generations kept on disk; teach.py: the run)."""
