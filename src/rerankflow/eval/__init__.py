"""IR evaluation (ir-measures), side-by-side experiments with significance tests, and the
reports read from rankings' traces."""

from .experiment import Experiment, ExperimentResult, experiment
from .measures import evaluate

__all__ = ["Experiment", "ExperimentResult", "evaluate", "experiment"]
