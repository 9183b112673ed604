"""Metrics on labelled pairs: ROC-AUC, PR-AUC (scikit-learn) and F1 at a validation threshold."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

# scikit-learn is imported where a metric is computed: sklearn.metrics pulls in scipy.stats, about
# two seconds of every process start (every CLI call, every DistDGL server and trainer) that most
# of them never use.


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on (validation) pairs."""
    from sklearn.metrics import precision_recall_curve
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.0


def pair_metrics(labels: np.ndarray, scores: np.ndarray, threshold: Optional[float] = None) -> Dict[str, float]:
    """ROC-AUC, PR-AUC and F1 (at ``threshold``, picked elsewhere on validation pairs; without
    one, the F1-maximising threshold of these pairs is used and reported as such)."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError("pair metrics need both positive and negative labels")
    picked_here = threshold is None
    if threshold is None:
        threshold = best_f1_threshold(labels, scores)
    return {"ROC-AUC": float(roc_auc_score(labels, scores)),
            "PR-AUC": float(average_precision_score(labels, scores)),
            "F1": float(f1_score(labels, scores >= threshold)),
            "threshold": float(threshold), "threshold_from_validation": not picked_here,
            "pairs": int(len(labels))}
