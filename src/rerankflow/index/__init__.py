"""Your own documents: extraction, chunking, a persistent incrementally updated index (docs/indexing.md)."""

from .chunking import ChunkSettings
from .store import OpenIndex, open_index
from .update import IndexReport, IndexSettings, update_index

__all__ = ["ChunkSettings", "IndexReport", "IndexSettings", "OpenIndex", "open_index", "update_index"]
