"""The one error type of the sensor and output processes."""


class SensorError(RuntimeError):
    """A device or source that cannot be used (missing, busy, wrong choice, library absent);
    the text says what was tried and how to choose another."""
