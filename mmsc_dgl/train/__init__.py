"""Losses, graph-dropout views, checkpoints and the trainer.  No DGL here."""
