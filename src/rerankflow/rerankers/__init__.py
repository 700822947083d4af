"""Rerankers: stages that rescore the candidates they are given."""
