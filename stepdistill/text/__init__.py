"""Text data: inputs written in words, and teachers that answer in words (large language models)."""
