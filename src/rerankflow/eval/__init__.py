"""IR evaluation (ir-measures) and side-by-side experiments with significance tests."""
