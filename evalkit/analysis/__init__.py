"""From rows to answers: statistics, comparing runs, summaries."""
