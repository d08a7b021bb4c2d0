"""Sending the plan: the run, its workers, one request, retries, limits, budget, resume."""
