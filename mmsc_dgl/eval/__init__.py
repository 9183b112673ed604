"""Evaluation: sampled negatives, ranking and pair metrics, cold start.  No DGL here."""
