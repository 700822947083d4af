"""Readers and writers: TREC topics/qrels/runs, BEIR folders, JSONL documents, hit lists,
question files, and a job's dataset."""

from .dataset import demo_dataset, load_dataset
from .jsonl import read_documents, read_hits
from .trec import read_qrels, read_run, read_topics, write_run

__all__ = [
    "demo_dataset",
    "load_dataset",
    "read_documents",
    "read_hits",
    "read_qrels",
    "read_run",
    "read_topics",
    "write_run",
]
