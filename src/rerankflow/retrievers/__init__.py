"""First-stage retrievers: BM25 (two engines), dense, and hybrid via fusion."""
