"""The one exception type users see: a one-line message naming the problem and the fix."""


class StepDistillError(ValueError):
    """Bad input or configuration. The CLI prints ``str(err)`` on one line and exits with code 2."""
