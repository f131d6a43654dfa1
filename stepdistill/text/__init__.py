"""Text records as inputs of classifier students: their text fields turned into features by a
frozen, cached sentence encoder (encoders.py, features.py, inputs.py). Generative students are
lm/'s; an LLM teacher's outputs are read by data/llm_outputs.py, written by lm_teach/."""
