"""ns-filter's selection: per class the K most confident records above the threshold, and their copies.

The rule: a record is a candidate when its confidence passes the threshold (`passes_threshold`);
per class the K candidates of highest confidence are kept, ties broken by the earlier position
in the reading order; a class with fewer than K keeps all its candidates, copied up to K
(`class_copies`).  It is found exactly in streaming passes whose memory does not grow with K or
with the number of records:

1. `ClassHistograms`: per class, the count of candidates in each of about 2^14 (1000 classes)
   to 2^16 (few classes) fine bins of the confidence's float32 bit pattern over [threshold, 1]
   (which, for values >= 0, orders as the values do).  Scanning each class's bins from the top
   gives the bin that holds the K-th candidate (the cut bin) and how many of it are needed.
2. `CutBinLook`, only when some class needs part of its cut bin: a second read of the labels and
   confidences that counts, per such class, each distinct confidence in its cut bin (at most one
   bin's width of values, 2^10 at 1000 classes, whatever the number of records in it).  That
   gives the exact cut confidence of the class and how many records at exactly that confidence
   are taken: the first ones by position.
3. `Selector`, in the copy pass: a candidate is kept when its confidence is above its class's cut,
   or equal to it and among the first that many records with that confidence; its copies come
   from `class_copies` by its rank among the kept records of its class.

State: classes x bins counts in pass 1, the distinct confidences of the cut bins in the second
look, then per class a few numbers plus one bit per kept record of the classes that get an
extra copy (16 MB at 1000 classes x K = 130,000, the only part that grows with K).
"""

import dataclasses

import numpy as np

# Pass 1's histogram holds at most about this many cells (int64: 128 MB).
MAX_CELLS = 2 ** 24
MIN_BINS = 2 ** 8
MAX_BINS = 2 ** 16
DEFAULT_CLASSES = 1000  # what the bins are sized for when the class count is not known
_ONE_KEY = int(np.float32(1.0).view(np.uint32))
_KEY_BITS = 32


def passes_threshold(confidence, threshold):
  """True (bool array) where `confidence` (float32 values) is >= `threshold`, compared in float32
  as every pass compares them."""
  return np.asarray(confidence, np.float32) >= threshold


def class_copies(count, k, duplicate, seed, class_index):
  """Copies (int64 [count]) of the `count` kept records of class `class_index`, in position
  order, so that the class has exactly k (duplicate=True; the k % count extra copies go to
  records drawn with the seed (seed, class_index)) or keeps its records once (duplicate=False).
  Depends on nothing outside the class, so classes can be balanced independently."""
  if not duplicate:
    return np.ones(count, np.int64)
  copies = np.full(count, k // count, np.int64)
  extra = k % count
  if extra:
    rng = np.random.default_rng((int(seed), int(class_index)))
    copies[rng.choice(count, size=extra, replace=False)] += 1
  return copies


def confidence_keys(confidence):
  """int64 keys of float32 confidences >= 0 (those that pass a threshold in [0, 1]): ordered as
  the values and equal exactly when the values are equal (-0.0 and 0.0 share a key)."""
  # Adding +0.0 turns -0.0 into 0.0; the bits of a non-negative float order as its value.
  values = np.asarray(confidence, np.float32) + np.float32(0.0)
  return values.view(np.uint32).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class BinLayout:
  """Equal bins of 2^shift keys from key `base` up; the first bin also takes the keys below
  `base`, the last those above 1.0."""
  base: int
  shift: int
  num_bins: int

  @classmethod
  def for_threshold(cls, threshold, num_classes=None):
    """The finest layout over [threshold, 1] with at most MAX_CELLS / num_classes bins (between
    MIN_BINS and MAX_BINS)."""
    max_bins = int(np.clip(MAX_CELLS // max(num_classes or DEFAULT_CLASSES, 1), MIN_BINS, MAX_BINS))
    low = np.float32(threshold)
    # One step below the float32 threshold: no passing value lies under it, however the
    # threshold was rounded.
    base = int(confidence_keys(np.nextafter(low, np.float32(0.0)))) if low > 0 else 0
    shift = 0
    while ((_ONE_KEY - base) >> shift) + 2 > max_bins:
      shift += 1
    return cls(base, shift, ((_ONE_KEY - base) >> shift) + 2)

  def bins(self, keys):
    """Bin index (int64) of each key."""
    return np.clip((keys - self.base) >> self.shift, 0, self.num_bins - 1)

  def lowest_key(self, b):
    """The smallest key in bin b (0 for the first bin)."""
    return 0 if b == 0 else self.base + (b << self.shift)


class ClassHistograms:
  """Pass 1: per class, how many confidences >= threshold fall in each bin of a BinLayout."""

  def __init__(self, threshold, num_classes=None):
    self.threshold = threshold
    self.layout = BinLayout.for_threshold(threshold, num_classes)
    self.counts = np.zeros((num_classes or 0, self.layout.num_bins), np.int64)

  def add(self, labels, confidence):
    """Counts one batch: labels (int >= 0, [n]) and their confidences (float32 [n])."""
    confidence = np.asarray(confidence, np.float32)
    above = passes_threshold(confidence, self.threshold)
    labels = np.asarray(labels, np.int64)[above]
    if not len(labels):
      return
    self._grow(int(labels.max()) + 1)
    cells = labels * self.layout.num_bins + self.layout.bins(confidence_keys(confidence[above]))
    np.add.at(self.counts.reshape(-1), cells, 1)

  def _grow(self, num_classes):
    if num_classes > len(self.counts):
      grown = np.zeros((max(num_classes, 2 * len(self.counts)), self.layout.num_bins), np.int64)
      grown[:len(self.counts)] = self.counts
      self.counts = grown

  def plan(self, k, num_classes):
    """The CutPlan of the top k per class for `num_classes` classes (>= every label seen)."""
    if self.counts[num_classes:].any():
      raise ValueError(f'a label >= num_classes ({num_classes}) was counted')
    self._grow(num_classes)
    counts = self.counts[:num_classes]
    plan = CutPlan.everything(self.threshold, k, self.layout, counts.sum(axis=1), num_classes)
    for c in np.flatnonzero(plan.kept < plan.above):
      from_top = np.cumsum(counts[c, ::-1])  # from_top[j]: candidates in the top j + 1 bins
      j = int(np.searchsorted(from_top, k))
      b = self.layout.num_bins - 1 - j
      needed = k - (int(from_top[j]) - int(counts[c, b]))
      if needed == counts[c, b]:  # the cut falls between two bins: take bins b and above whole
        plan.cut_key[c] = self.layout.lowest_key(b) - 1
      else:
        plan.look_bin[c], plan.look_count[c], plan.needed[c] = b, counts[c, b], needed
    return plan


@dataclasses.dataclass
class CutPlan:
  """Per class c: a candidate with key > cut_key[c] is kept, one with key == cut_key[c] when it
  is among the first tie_take[c] of them; classes with look_bin[c] >= 0 still need their cut
  found among the look_count[c] candidates of that bin (needed[c] of them are kept)."""
  threshold: float
  k: int
  layout: BinLayout
  above: np.ndarray  # candidates per class
  kept: np.ndarray  # min(k, above)
  cut_key: np.ndarray
  tie_take: np.ndarray
  look_bin: np.ndarray
  look_count: np.ndarray
  needed: np.ndarray

  @classmethod
  def everything(cls, threshold, k, layout, above, num_classes):
    """A plan that keeps every candidate; `above` (int [num_classes]) counts them per class."""
    zeros = lambda: np.zeros(num_classes, np.int64)  # pylint: disable=unnecessary-lambda-assignment
    return cls(threshold, k, layout, np.asarray(above, np.int64), np.minimum(above, k),
               np.full(num_classes, -1, np.int64), zeros(), np.full(num_classes, -1, np.int64),
               zeros(), zeros())

  @property
  def needs_look(self):
    """True when some class's cut lies inside a bin (CutBinLook must resolve it)."""
    return bool((self.look_bin >= 0).any())


class CutBinLook:
  """The second look: per class whose cut lies inside a bin, the count of each distinct key of
  its candidates in that bin; `resolve` turns them into the exact cut."""

  COMPACT_AT = 2 ** 18  # pending entries (each batch's distinct ones) before merging them

  def __init__(self, plan):
    self.plan = plan
    self.codes = np.zeros(0, np.int64)  # sorted distinct (class << 32 | key)
    self.weights = np.zeros(0, np.int64)
    self.pending = []
    self.num_pending = 0
    self.peak = 0

  def add(self, labels, confidence):
    """Counts the candidates of one batch (labels [n], confidence float32 [n]) in their class's
    cut bin."""
    confidence = np.asarray(confidence, np.float32)
    above = passes_threshold(confidence, self.plan.threshold)
    labels = np.asarray(labels, np.int64)[above]
    keys = confidence_keys(confidence[above])
    in_cut = self.plan.look_bin[labels] == self.plan.layout.bins(keys)
    codes, counts = np.unique((labels[in_cut] << _KEY_BITS) | keys[in_cut], return_counts=True)
    if len(codes):
      self.pending.append((codes, counts))
      self.num_pending += len(codes)
      self.peak = max(self.peak, len(self.codes) + self.num_pending)
      if self.num_pending >= max(self.COMPACT_AT, len(self.codes)):
        self._compact()

  def _compact(self):
    codes = np.concatenate([self.codes] + [c for c, _ in self.pending])
    weights = np.concatenate([self.weights] + [w for _, w in self.pending])
    order = np.argsort(codes, kind='stable')
    codes, weights = codes[order], weights[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    self.codes, self.weights = codes[starts], np.add.reduceat(weights, starts)
    self.pending, self.num_pending = [], 0

  def resolve(self):
    """The plan with every cut exact (no class left to look at).  Raises RuntimeError when the
    candidates counted differ from pass 1's (the input changed between the reads)."""
    self._compact()
    plan = self.plan
    classes = self.codes >> _KEY_BITS
    for c in np.flatnonzero(plan.look_bin >= 0):
      lo, hi = np.searchsorted(classes, [c, c + 1])
      keys = self.codes[lo:hi][::-1] & ((1 << _KEY_BITS) - 1)  # highest confidence first
      counts = self.weights[lo:hi][::-1]
      if counts.sum() != plan.look_count[c]:
        raise RuntimeError(f'class {c}: {counts.sum()} records in its cut bin on the second read, '
                           f'{plan.look_count[c]} on the first: the input changed between reads')
      from_top = np.cumsum(counts)
      j = int(np.searchsorted(from_top, plan.needed[c]))
      plan.cut_key[c] = keys[j]
      plan.tie_take[c] = plan.needed[c] - (from_top[j] - counts[j])
    plan.look_bin[:] = -1
    return plan


def running_rank(labels, seen):
  """For each of `labels` (int [n]), how many equal labels came before it: seen[label] (int64
  per class, from earlier batches; updated in place) plus the earlier ones in this batch."""
  order = np.argsort(labels, kind='stable')
  sorted_labels = labels[order]
  starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
  group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
  ranks = np.empty(len(labels), np.int64)
  ranks[order] = np.arange(len(order)) - group_start + seen[sorted_labels]
  seen += np.bincount(labels, minlength=len(seen))
  return ranks


class Selector:
  """The copy pass's choice, batch by batch in reading order, from an exact CutPlan."""

  def __init__(self, plan, duplicate, seed):
    if plan.needs_look:
      raise ValueError('the plan still has cuts inside a bin: resolve them with CutBinLook')
    self.plan = plan
    num_classes = len(plan.kept)
    self.ties_seen = np.zeros(num_classes, np.int64)
    self.kept_seen = np.zeros(num_classes, np.int64)
    self.base_copies = np.ones(num_classes, np.int64)
    self.bit_offset = np.full(num_classes, -1, np.int64)
    packed = []
    offset = 0
    for c in np.flatnonzero((plan.kept > 0) & (plan.kept < plan.k)) if duplicate else []:
      copies = class_copies(int(plan.kept[c]), plan.k, True, seed, c)
      self.base_copies[c] = plan.k // plan.kept[c]
      if plan.k % plan.kept[c]:
        packed.append(np.packbits(copies > self.base_copies[c]))
        self.bit_offset[c] = offset
        offset += len(packed[-1])
    self.extra_bits = np.concatenate(packed) if packed else np.zeros(0, np.uint8)

  def select(self, labels, confidence):
    """The kept records of the next batch: (indices into the batch, int64 [m] ascending; their
    copies, int64 [m]) for labels (int [n]) and confidence (float32 [n])."""
    plan = self.plan
    confidence = np.asarray(confidence, np.float32)
    index = np.flatnonzero(passes_threshold(confidence, plan.threshold))
    labels = np.asarray(labels, np.int64)[index]
    keys = confidence_keys(confidence[index])
    cut = plan.cut_key[labels]
    chosen = keys > cut
    tied = np.flatnonzero(keys == cut)
    if len(tied):
      chosen[tied] = running_rank(labels[tied], self.ties_seen) < plan.tie_take[labels[tied]]
    index, labels = index[chosen], labels[chosen]
    return index, self._copies(labels, running_rank(labels, self.kept_seen))

  def _copies(self, labels, ranks):
    copies = self.base_copies[labels]
    offset = self.bit_offset[labels]
    has_bits = np.flatnonzero(offset >= 0)
    if len(has_bits):
      r = ranks[has_bits]
      byte = self.extra_bits[offset[has_bits] + (r >> 3)]
      copies[has_bits] += (byte >> (7 - (r & 7))) & 1
    return copies


def plan_selection(histograms, k, num_classes, read_again):
  """The exact CutPlan of the top k per class from pass 1's `histograms`, reading the labels and
  confidences once more (`read_again()`: an iterable of (labels, confidence) batches) only when
  a cut lies inside a bin.  Returns (plan, the most cut-bin entries held at once)."""
  plan = histograms.plan(k, num_classes)
  if not plan.needs_look:
    return plan, 0
  look = CutBinLook(plan)
  for labels, confidence in read_again():
    look.add(labels, confidence)
  return look.resolve(), look.peak
