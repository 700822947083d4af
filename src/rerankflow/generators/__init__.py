"""Answer generation from a ranking's passages."""
