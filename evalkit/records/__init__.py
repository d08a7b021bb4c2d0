"""What a run keeps: journal entries and their fold, the run directory, the cache, the DataFrame."""
