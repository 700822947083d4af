"""Readers and writers: TREC topics/qrels/runs, BEIR folders, JSONL documents, hit lists,
question files, a job's dataset, and rankings as pandas DataFrames."""

from .dataset import demo_dataset, load_dataset
from .frames import rankings_from_frame, rankings_to_frame
from .jsonl import read_documents, read_hits
from .trec import read_qrels, read_run, read_topics, write_run

__all__ = [
    "demo_dataset",
    "load_dataset",
    "rankings_from_frame",
    "rankings_to_frame",
    "read_documents",
    "read_hits",
    "read_qrels",
    "read_run",
    "read_topics",
    "write_run",
]
