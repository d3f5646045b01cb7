"""The per-class top K of ns-filter as a Beam combiner over (confidence, position), never records.

ns-filter keeps, per class, the K records of highest confidence, ties broken by the earlier
position in its reading order (files sorted, records in file order).  A position here is
(file index, record index), whose order is that reading order, so Top.PerKey with the key
(confidence, -file index, -record index) keeps exactly ns-filter's records.
"""

import apache_beam as beam


def rank_key(candidate):
  """The Top key of a candidate (confidence, file index, record index): larger is better."""
  confidence, file_index, record_index = candidate
  return confidence, -file_index, -record_index


class TopKPerClass(beam.PTransform):
  """PCollection of (class, (confidence, file index, record index)) -> (class, [the class's k
  best candidates]) by ns-filter's rule."""

  def __init__(self, k):
    super().__init__()
    if not (isinstance(k, int) and k > 0):
      raise ValueError(f'k (per_class) must be a positive integer, got {k!r}')
    self._k = k

  def expand(self, candidates):
    """Applies the combiner."""
    return candidates | beam.combiners.Top.PerKey(self._k, key=rank_key)
