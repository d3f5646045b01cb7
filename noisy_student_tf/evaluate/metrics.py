"""Classification metrics accumulated batch by batch: top-1, top-5, cross-entropy loss."""

import numpy as np


def _log_softmax(logits):
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ClassificationMetrics:
  """Running top-1 / top-k accuracy and mean cross-entropy over labeled examples.

  `update(logits [N, C], labels [N])` adds a batch (rows with label < 0, i.e. unlabeled, are
  ignored); `result()` returns {'top1', 'top5', 'loss', 'num_examples'} (top5 is top-min(5, C)).
  """

  def __init__(self, k=5):
    self.k = k
    self.count = 0
    self.correct1 = 0
    self.correctk = 0
    self.loss_sum = 0.0

  def update(self, logits, labels):
    """Adds one batch of float logits [N, C] and integer labels [N]."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep]
    if not len(labels):
      return
    num_classes = logits.shape[1]
    if labels.max() >= num_classes:
      raise ValueError(f'label {int(labels.max())} is out of range for a model with '
                       f'{num_classes} classes')
    k = min(self.k, num_classes)
    true_logit = logits[np.arange(len(labels)), labels]
    # ties count against the example: correct only if strictly fewer than k logits are larger
    rank = (logits > true_logit[:, None]).sum(axis=1)
    self.correct1 += int((rank == 0).sum())
    self.correctk += int((rank < k).sum())
    self.loss_sum += float(-_log_softmax(logits)[np.arange(len(labels)), labels].sum())
    self.count += len(labels)

  def result(self):
    """Returns the metrics so far as a dict of floats (and int num_examples)."""
    n = max(self.count, 1)
    return {'top1': self.correct1 / n, 'top5': self.correctk / n, 'loss': self.loss_sum / n,
            'num_examples': self.count}
