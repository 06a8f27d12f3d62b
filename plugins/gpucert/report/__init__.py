"""The report card: rendered from the run's own metrics.json, so a card can be rebuilt from data."""
