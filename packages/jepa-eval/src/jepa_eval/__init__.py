"""jepa-eval: probes for frozen encoders."""

__version__ = "0.1.0"
