"""The error types of the sensors: a device or source that cannot be used, and raw input that
cannot become a stimulus."""


class SensorError(RuntimeError):
    """A device or source that cannot be used (missing, busy, wrong choice, library absent);
    the text says what was tried and how to choose another."""


class FeatureError(ValueError):
    """Raw input that cannot become a stimulus; the message says what was wrong."""
