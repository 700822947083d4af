"""Prompt templates as data (YAML), validated at load."""
