"""A suite: its schema, loading YAML and JSONL with lines, its templates rendered in a sandbox."""
