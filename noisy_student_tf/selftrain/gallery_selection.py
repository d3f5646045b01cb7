"""The pseudo-labeled images a gallery shows, chosen in one streaming pass over the records.

For each pseudo-label class (the teacher's argmax) three categories of at most `per_class` records:
  confident        the most confident (ties: the earlier record)
  near_threshold   the closest to the filter's threshold, either side (ties: the earlier record)
  wrong            where the true label is known: the most confident whose pseudo-label differs
                   from it (the teacher's confident mistakes)
plus, where true labels are known: per class, how many pseudo-labels agree with them (over all
records and over those at or above the threshold: what the student trains on); the confusion
matrix of true labels against pseudo-labels; and the teacher's reliability, the agreement by
confidence bin (RELIABILITY_BINS equal bins of [0, 1]).

`GallerySelector` keeps one bounded min-heap per class and category and the classes x classes
counts, so memory depends on the class count and per_class, never on the number of records;
`select_from_records` feeds it from pseudo-label record files (data/records.py).
"""

import dataclasses
import heapq
from typing import Dict, List

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import records as records_lib
from noisy_student_tf.evaluate import calibration
from noisy_student_tf.selftrain import shards

CATEGORIES = ('confident', 'near_threshold', 'wrong')
DEFAULT_PER_CLASS = 8
RELIABILITY_BINS = 10
UNKNOWN = -1  # true label of a record whose source has no label for it
_FEATURES = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
             'image/source_id': tf.io.FixedLenFeature([], tf.string, default_value=''),
             'pseudo/label': tf.io.FixedLenFeature([], tf.int64),
             'pseudo/confidence': tf.io.FixedLenFeature([], tf.float32)}


def text(value):
  """A source id (bytes or str) as str."""
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class Tile:
  """One selected record: its encoded image, id, position in the stream (0-based over all
  files), pseudo-label, confidence and true label (UNKNOWN when not known)."""
  encoded: bytes
  source_id: str
  position: int
  label: int
  confidence: float
  true_label: int = UNKNOWN


@dataclasses.dataclass
class Selection:
  """What `GallerySelector.result` returns.

  tiles: {category: [list of Tiles per class, best first]} (one list per class, maybe empty).
  compared / correct / compared_above / correct_above: int64 [C] per pseudo-label class, the
  records with a known true label and how many of them agree (all records; those with confidence
  >= threshold).  num_records: records read.  confusion: int64 [C, C], records with a known true
  label by (true label, pseudo-label).  bin_compared / bin_correct: int64 [B], those records and
  the agreeing ones per confidence bin (bin b holds b/B <= confidence < (b+1)/B, edges compared in
  float32 as the confidences are stored; the last bin also holds 1.0); bin_confidence_sum:
  float64 [B], the sum of their confidences.
  """
  threshold: float
  per_class: int
  num_classes: int
  tiles: Dict[str, List[List[Tile]]]
  compared: np.ndarray
  correct: np.ndarray
  compared_above: np.ndarray
  correct_above: np.ndarray
  num_records: int
  confusion: np.ndarray
  bin_compared: np.ndarray
  bin_correct: np.ndarray
  bin_confidence_sum: np.ndarray

  @property
  def has_truth(self):
    """True when any record's true label was known."""
    return bool(self.compared.sum())

  def accuracy(self, above_threshold=False):
    """Per-class pseudo-label accuracy, float [C] (NaN for a class with no known true label)."""
    n, ok = ((self.compared_above, self.correct_above) if above_threshold
             else (self.compared, self.correct))
    return _ratio(ok, n)

  def bin_edges(self):
    """The reliability bins' edges, float64 [B + 1] from 0 to 1."""
    return np.linspace(0.0, 1.0, len(self.bin_compared) + 1)

  def reliability(self):
    """The teacher's reliability over the records with a known true label: (accuracy, mean
    confidence), float64 [B] each per confidence bin (NaN for an empty bin)."""
    return (_ratio(self.bin_correct, self.bin_compared),
            _ratio(self.bin_confidence_sum, self.bin_compared))

  def calibration_error(self):
    """The pseudo-labels' expected calibration error over the bins, sum of n_b / N x |accuracy_b -
    mean confidence_b| (a fraction), or NaN without known true labels."""
    return calibration.calibration_error_from_bins(self.bin_compared, *self.reliability())

  def confusion_rates(self):
    """The confusion matrix normalised per true class (rows sum to 1; a true class without
    records is a row of NaN), float64 [C, C]."""
    return _ratio(self.confusion, self.confusion.sum(axis=1, keepdims=True))


def _ratio(numerator, count):
  """numerator / count elementwise (count broadcast), NaN where count is 0."""
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, numerator / np.maximum(count, 1), np.nan)


class GallerySelector:
  """Keeps, per class and category, the best `per_class` records seen so far.

  `GallerySelector(num_classes, threshold, per_class=8, bins=RELIABILITY_BINS)`;
  `add(labels, confidences, source_ids, encoded, true_labels)` per batch (numpy arrays of one
  length; true_labels UNKNOWN where not known); `result()` gives the Selection.  `num_kept()` is
  the number of records held, never more than len(CATEGORIES) x num_classes x per_class.  A source
  id already kept in a class's category is not kept again (balanced sets repeat records).
  """

  def __init__(self, num_classes, threshold, per_class=DEFAULT_PER_CLASS, bins=RELIABILITY_BINS):
    if not (isinstance(num_classes, (int, np.integer)) and num_classes > 0):
      raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
    if not 0.0 <= threshold <= 1.0:
      raise ValueError(f'threshold must be in [0, 1], got {threshold!r}')
    if not (isinstance(per_class, (int, np.integer)) and per_class > 0):
      raise ValueError(f'per_class must be a positive integer, got {per_class!r}')
    if not (isinstance(bins, (int, np.integer)) and bins > 0):
      raise ValueError(f'bins must be a positive integer, got {bins!r}')
    self.num_classes, self.threshold, self.per_class = int(num_classes), float(threshold), per_class
    # Min-heaps of (score, -position, Tile): the root is the entry to evict (lowest score, and of
    # equal scores the latest record, so that earlier records win ties).
    self._heaps = {c: [[] for _ in range(self.num_classes)] for c in CATEGORIES}
    # The root's score of each full heap (-inf while not full): a vectorised pre-screen.
    self._floor = {c: np.full(self.num_classes, -np.inf) for c in CATEGORIES}
    self._ids = {c: [set() for _ in range(self.num_classes)] for c in CATEGORIES}
    shape = self.num_classes
    self.compared, self.correct = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    self.compared_above, self.correct_above = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    self.confusion = np.zeros((shape, shape), np.int64)
    self.bin_compared, self.bin_correct = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    self.bin_confidence_sum = np.zeros(bins, np.float64)
    # Inner bin edges in float32, as the confidences are stored: a confidence of 0.7 (float32) is
    # in the bin from 0.7, not below it as float64 arithmetic would put it.
    self._inner_edges = np.linspace(0.0, 1.0, bins + 1).astype(np.float32)[1:-1]
    self.num_records = 0

  def num_kept(self):
    """The number of records held now (over every class and category)."""
    return sum(len(h) for heaps in self._heaps.values() for h in heaps)

  def _scores(self, category, confidences):
    if category == 'near_threshold':
      return -np.abs(confidences.astype(np.float64) - self.threshold)
    return confidences.astype(np.float64)

  def add(self, labels, confidences, source_ids, encoded, true_labels=None):
    """Offers one batch of records (numpy arrays of equal length; source_ids and encoded hold
    bytes).  Raises ValueError for a pseudo-label outside [0, num_classes)."""
    labels = np.asarray(labels, np.int64)
    confidences = np.asarray(confidences, np.float32)
    n = len(labels)
    truth = (np.full(n, UNKNOWN, np.int64) if true_labels is None
             else np.asarray(true_labels, np.int64))
    if not len(confidences) == len(source_ids) == len(encoded) == len(truth) == n:
      raise ValueError(f'batch arrays differ in length: {n} labels, {len(confidences)} '
                       f'confidences, {len(source_ids)} ids, {len(encoded)} images, '
                       f'{len(truth)} true labels')
    if n and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f'pseudo/label out of range [0, {self.num_classes}): min {labels.min()}, '
                       f'max {labels.max()}')
    known_truth = truth[truth != UNKNOWN]
    if len(known_truth) and (known_truth.min() < 0 or known_truth.max() >= self.num_classes):
      raise ValueError(f'true label out of range [0, {self.num_classes}): min '
                       f'{known_truth.min()}, max {known_truth.max()}')
    if n and not (np.all(confidences >= 0) and np.all(confidences <= 1)):
      raise ValueError(f'pseudo/confidence outside [0, 1]: min {confidences.min()}, max '
                       f'{confidences.max()}')
    positions = np.arange(self.num_records, self.num_records + n)
    self.num_records += n
    known = truth != UNKNOWN
    right = known & (truth == labels)
    above = confidences >= self.threshold
    for counts, mask in ((self.compared, known), (self.correct, right),
                         (self.compared_above, known & above), (self.correct_above, right & above)):
      counts += np.bincount(labels[mask], minlength=self.num_classes)
    np.add.at(self.confusion, (truth[known], labels[known]), 1)
    bins = len(self.bin_compared)
    index = np.searchsorted(self._inner_edges, confidences[known], side='right')
    self.bin_compared += np.bincount(index, minlength=bins)
    self.bin_correct += np.bincount(index[right[known]], minlength=bins)
    self.bin_confidence_sum += np.bincount(index, confidences[known].astype(np.float64), bins)
    for category in CATEGORIES:
      eligible = (known & ~right) if category == 'wrong' else np.ones(n, bool)
      scores = self._scores(category, confidences)
      for i in np.flatnonzero(eligible & (scores > self._floor[category][labels])):
        self._offer(category, int(labels[i]), float(scores[i]), Tile(
            encoded=bytes(encoded[i]), source_id=text(source_ids[i]), position=int(positions[i]),
            label=int(labels[i]), confidence=float(confidences[i]), true_label=int(truth[i])))

  def _offer(self, category, label, score, tile):
    heap, ids = self._heaps[category][label], self._ids[category][label]
    if tile.source_id in ids:
      return
    entry = (score, -tile.position, tile)
    if len(heap) < self.per_class:
      heapq.heappush(heap, entry)
    elif entry[:2] > heap[0][:2]:
      ids.discard(heapq.heapreplace(heap, entry)[2].source_id)
    else:
      return
    ids.add(tile.source_id)
    if len(heap) == self.per_class:
      self._floor[category][label] = heap[0][0]

  def result(self):
    """The Selection: per category and class the kept tiles, best first."""
    tiles = {c: [[e[2] for e in sorted(h, reverse=True)] for h in self._heaps[c]]
             for c in CATEGORIES}
    return Selection(self.threshold, self.per_class, self.num_classes, tiles, self.compared.copy(),
                     self.correct.copy(), self.compared_above.copy(), self.correct_above.copy(),
                     self.num_records, self.confusion.copy(), self.bin_compared.copy(),
                     self.bin_correct.copy(), self.bin_confidence_sum.copy())


def _batches(files, batch_size):
  ds = tf.data.TFRecordDataset(files).batch(batch_size)
  ds = ds.map(lambda s: tf.io.parse_example(s, _FEATURES), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).prefetch(2)
  return ds.as_numpy_iterator()


def select_from_records(records, threshold, *, per_class=DEFAULT_PER_CLASS, truth=None,
                        num_classes=None, batch_size=4096):
  """Streams the pseudo-label records `records` (a folder, a glob or pseudo:GLOB) once and
  selects the gallery's images.

  threshold: the filter threshold the near-threshold images are closest to.  truth: {source_id:
  true label} (see pseudo_gallery.source_labels) or None.  num_classes: default from the first
  record.  Returns a Selection.  Raises ValueError when nothing matches `records`, a file is not a
  pseudo-label record file, or the records hold none.
  """
  files = shards.list_record_files(records)
  num_classes = num_classes or records_lib.peek_num_classes(files[0])
  selector = GallerySelector(num_classes, threshold, per_class)
  for batch in _batches(files, batch_size):
    ids = batch['image/source_id']
    true_labels = None
    if truth is not None:
      true_labels = np.array([truth.get(text(s), UNKNOWN) for s in ids], np.int64)
    selector.add(batch['pseudo/label'], batch['pseudo/confidence'], ids, batch['image/encoded'],
                 true_labels)
  if selector.num_records == 0:
    raise ValueError(f'the pseudo-label records {records!r} hold no record')
  return selector.result()
