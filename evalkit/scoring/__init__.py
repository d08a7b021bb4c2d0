"""Grading outputs: the checks, running them off the event loop, and the checks a model grades."""
