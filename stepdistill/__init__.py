"""stepdistill: distill a large teacher into a small student, and measure which method works."""

__version__ = "0.1.0"
