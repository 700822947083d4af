"""The ``rerankflow`` command."""
