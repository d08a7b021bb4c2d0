"""Which model a name means: the catalogue and prices, endpoints and keys, token counts."""
