"""Runnable examples: one FastAPI app per use, and the demo (``python -m examples.demo``)."""
