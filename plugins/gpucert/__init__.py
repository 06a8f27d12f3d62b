"""gpucert: a pytest-based certification and regression suite for GPU inference nodes."""

__version__ = "0.1.0"
