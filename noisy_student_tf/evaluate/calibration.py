"""Expected calibration error (ECE): how far a model's confidence is from its accuracy.

ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)| over equal-width confidence bins
(Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, eq. 3), confidence = the top
softmax probability. Pure numpy.
"""

import numpy as np


def softmax(logits):
  """Row-wise softmax of logits [N, C] (float64, numerically stable)."""
  z = np.asarray(logits, dtype=np.float64)
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def reliability_bins(probabilities, labels, num_bins=15):
  """Per-bin counts, accuracy and mean confidence.

  probabilities: [N, C] rows summing to 1; labels: [N] ints. Bin b holds confidences in
  (b/num_bins, (b+1)/num_bins]; a confidence of exactly 0 goes to bin 0.
  Returns a dict of numpy arrays 'count', 'accuracy', 'confidence' (length num_bins; accuracy and
  confidence are 0 for empty bins).
  """
  probabilities = np.asarray(probabilities, dtype=np.float64)
  labels = np.asarray(labels)
  if probabilities.ndim != 2 or labels.shape != (probabilities.shape[0],):
    raise ValueError(f'expected probabilities [N, C] and labels [N], got {probabilities.shape} '
                     f'and {labels.shape}')
  if int(num_bins) < 1:
    raise ValueError(f'num_bins must be >= 1, got {num_bins}')
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
  bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins).astype(np.int64)
  safe = np.maximum(count, 1)
  accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / safe
  mean_conf = np.bincount(bins, weights=confidence, minlength=num_bins) / safe
  return {'count': count, 'accuracy': accuracy, 'confidence': mean_conf}


def calibration_error_from_bins(count, accuracy, confidence):
  """ECE (a fraction in [0, 1]) from per-bin record counts [B] and the bins' accuracy and mean
  confidence [B] (any value, NaN included, where a bin is empty); NaN when every bin is empty."""
  count = np.asarray(count, np.float64)
  total = count.sum()
  if not total:
    return float('nan')
  full = count > 0
  gaps = np.abs(np.asarray(accuracy, np.float64)[full] - np.asarray(confidence, np.float64)[full])
  return float(np.sum(count[full] * gaps) / total)


def expected_calibration_error(probabilities, labels, num_bins=15):
  """ECE (a fraction in [0, 1]) of predicted probabilities [N, C] against labels [N]."""
  bins = reliability_bins(probabilities, labels, num_bins)
  if not bins['count'].sum():
    raise ValueError('expected_calibration_error needs at least one example')
  return calibration_error_from_bins(bins['count'], bins['accuracy'], bins['confidence'])


def expected_calibration_error_from_logits(logits, labels, num_bins=15):
  """ECE of softmax(logits) against labels; see expected_calibration_error."""
  return expected_calibration_error(softmax(logits), labels, num_bins)
