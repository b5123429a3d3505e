"""rnnbench: config-driven experiments comparing recurrent neural network architectures."""

__version__ = "0.1.0"
