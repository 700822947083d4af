"""Composition (fusion), YAML jobs and the job runner."""
