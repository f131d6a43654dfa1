"""stepdistill: distill a large teacher into a small student, and measure which method works."""

__version__ = "0.1.0"

__all__ = ["StepDistillClassifier"]


def __getattr__(name: str):
    # Imported on first use: the estimator pulls in torch and scikit-learn, which the CLI's
    # start-up (and `import stepdistill` for the version) should not pay for.
    if name == "StepDistillClassifier":
        from stepdistill.estimator import StepDistillClassifier

        return StepDistillClassifier
    raise AttributeError(f"module 'stepdistill' has no attribute '{name}'")
