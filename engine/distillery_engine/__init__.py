"""Distillery's compute engine: loading, sampling, scoring and training of causal language models."""

__version__ = "0.1.0"
