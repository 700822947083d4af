"""Readers and writers: TREC topics/qrels/runs, BEIR folders, JSONL documents, hit lists."""
