"""Batch-size sweet-spot harness: config -> plan -> train -> results -> analysis -> report."""

__version__ = "0.1.0"
