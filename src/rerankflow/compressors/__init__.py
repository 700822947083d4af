"""Context compressors: stages between reranking and generation that fit a token budget."""
