"""Serve YAML pipelines over HTTP: OpenAI-compatible chat completions (streaming included),
Cohere/Jina-style rerank, health and readiness. Needs ``pip install 'rerankflow[serve]'``."""
