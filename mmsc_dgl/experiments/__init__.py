"""The experiment grid: baselines, ablations, noise robustness, cold start and meta-path depth,
run with ``mmsc-dgl experiment CONFIG`` and reported as Markdown, JSON and PNG."""
from mmsc_dgl.experiments.config import ExperimentConfig, load_experiment
from mmsc_dgl.experiments.grid import Cell, ExperimentResult, run_experiment

__all__ = ["ExperimentConfig", "load_experiment", "run_experiment", "Cell", "ExperimentResult"]
