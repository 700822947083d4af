"""Model backends: the only package that imports torch, transformers, sentence-transformers, vllm or openai."""
