"""The Batch API executor: a run's requests sent as batch files, answered into the same entries."""
