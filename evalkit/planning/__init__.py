"""From suite × models to requests: the one planning pass, validation, and the cost estimate."""
