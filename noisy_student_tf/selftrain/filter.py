"""ns-filter's library: confidence threshold and per-class balancing of pseudo-label records.

The paper keeps the images whose pseudo-label confidence is at least 0.3, then per class the K
most confident (K = 130K on ImageNet), and duplicates the images of classes with fewer than K
until they have K.  This runs in two streaming passes over the shards:

1. read only `pseudo/label` and `pseudo/confidence` (vectorised `tf.io.parse_example`); keep a
   bounded candidate pool of (class, confidence, position) that is pruned to the top K per class
   whenever it exceeds 2 x classes x K, so memory is bounded by classes x K, never by the number
   of records (the per-class selection is a lexsort + rank, the vectorised form of per-class
   heaps);
2. read the serialized records again and copy each selected one, unchanged, as many times as its
   class needs, dealing the copies round-robin over the output shards so that the shards are
   balanced and the duplicates of one image land in different shards.

Outputs: OUTPUT_DIR/balanced-NNNNN-of-NNNNN.tfrecord, stats.json (written last: the completion
marker) and plot.png.
"""

import dataclasses
import glob
import logging
import os
import time
from typing import Optional

import numpy as np

from noisy_student_tf import progress as progress_lib
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.beam import runner_settings
from noisy_student_tf import settings
from noisy_student_tf.settings import setting

OUTPUT_PREFIX = 'balanced'
PLOT_FILE = 'plot.png'
LABEL_KEY = 'pseudo/label'
CONFIDENCE_KEY = 'pseudo/confidence'


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """What ns-filter does (each field's help: settings.help_of)."""
  input: str = setting('', 'Pseudo-label records written by ns-label: a folder, a glob '
                       '(DIR/*.tfrecord) or pseudo:GLOB.')
  output_dir: str = setting('', 'Where the balanced shards, stats.json and plot.png go.')
  threshold: float = setting(0.3, "Keep records whose teacher confidence is >= this, in [0, 1] "
                             '(paper: 0.3).')
  per_class: Optional[int] = setting(None, 'K: records per class after balancing (the K most '
                                     'confident; fewer are duplicated up to K). Paper: 130000 on '
                                     'ImageNet. Unset: no balancing, every record above the '
                                     'threshold is kept once.')
  duplicate: bool = setting(True, 'Duplicate the records of classes with fewer than K.')
  num_shards: int = setting(8, 'Number of output shards.')
  num_classes: Optional[int] = setting(None, "Number of classes (default: from the labeler's "
                                       'stats.json next to the input, else the largest label + 1).')
  seed: int = setting(0, 'Seed of which records get an extra copy when K is not a multiple of a '
                      "class's count (drawn per class from (seed, class)).")
  read_batch: int = setting(8192, 'Records parsed per step.', result=False)
  progress: str = progress_lib.mode_setting()
  runner: str = runner_settings.runner_setting('filter')
  beam_options: str = runner_settings.beam_options_setting()

  def validate(self):
    """Raises ValueError naming the first bad field."""
    settings.check_choices(self)
    runner_settings.check(self)
    if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
      raise ValueError(f'threshold must be in [0, 1], got {self.threshold!r}')
    if self.per_class is not None and not (isinstance(self.per_class, int) and self.per_class > 0):
      raise ValueError(f'per_class (K) must be a positive integer or None (no balancing), got '
                       f'{self.per_class!r}')
    if not (isinstance(self.num_shards, int) and self.num_shards > 0):
      raise ValueError(f'num_shards must be a positive integer, got {self.num_shards!r}')
    if self.num_classes is not None and not self.num_classes > 0:
      raise ValueError(f'num_classes must be positive, got {self.num_classes!r}')
    if not self.read_batch > 0:
      raise ValueError(f'read_batch must be positive, got {self.read_batch!r}')
    if not self.input:
      raise ValueError('input must be set: the pseudo-label records to filter')
    if not self.output_dir:
      raise ValueError('output_dir must be set')


def _read_batches(files, batch, keep_serialized=False):
  """Yields (labels int64 [n], confidence float32 [n], serialized bytes [n] or None) batches over
  `files`, in file order then record order (the same order in both passes)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
              CONFIDENCE_KEY: tf.io.FixedLenFeature([], tf.float32)}

  def parse(serialized):
    parsed = tf.io.parse_example(serialized, features)
    out = (parsed[LABEL_KEY], parsed[CONFIDENCE_KEY])
    return out + (serialized,) if keep_serialized else out

  ds = tf.data.TFRecordDataset(files).batch(batch)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
  for item in ds.as_numpy_iterator():
    yield item if keep_serialized else item + (None,)


def _top_k_per_class(labels, conf, pos, k):
  """Returns the index array of the entries that are among the k most confident of their class
  (ties broken by earlier position)."""
  order = np.lexsort((pos, -conf, labels))
  sorted_labels = labels[order]
  starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
  group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
  rank = np.arange(len(order)) - group_start
  return order[rank < k]


class _TopKPool:
  """Candidates (label, confidence, position) pruned to the top K per class; the pool never holds
  more than max(2 x classes x K, 1) entries plus one batch."""

  def __init__(self, k, num_classes_hint):
    self.k = k
    self.classes_seen = max(1, num_classes_hint or 1)
    self.parts = []
    self.size = 0
    self.peak = 0

  def add(self, labels, conf, pos):
    self.parts.append((labels, conf, pos))
    self.size += len(labels)
    self.peak = max(self.peak, self.size)
    if len(labels):
      self.classes_seen = max(self.classes_seen, int(labels.max()) + 1)
    if self.size > 2 * self.classes_seen * self.k:
      self._prune()

  def _prune(self):
    labels, conf, pos = (np.concatenate(x) for x in zip(*self.parts))
    keep = _top_k_per_class(labels, conf, pos, self.k)
    self.parts = [(labels[keep], conf[keep], pos[keep])]
    self.size = len(keep)

  def result(self):
    """Returns (labels, confidence, positions) of the final top K per class."""
    if not self.parts:
      return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
    self._prune()
    return self.parts[0]


def passes_threshold(confidence, threshold):
  """True (bool array) where `confidence` (float32 values) is >= `threshold`, compared in float32
  as pass 1 and pass 2 compare them."""
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


def _copies_per_record(labels, k, duplicate, seed):
  """Returns int64 copies for each kept record (labels in position order) so that every class
  present has exactly k (duplicate=True) or keeps its records once (duplicate=False)."""
  copies = np.ones(len(labels), np.int64)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    copies[idx] = class_copies(len(idx), k, duplicate, seed, c)
  return copies


def num_classes_of(config, files):
  """The class count to filter with: config.num_classes, else the labeler's stats.json next to
  `files`, else None (then the largest label + 1)."""
  return config.num_classes or _num_classes_from_input(files)


def _num_classes_from_input(files):
  """Returns num_classes from the labeler's stats.json in the input folder, or None."""
  stats = shards.read_json(os.path.join(os.path.dirname(files[0]), shards.STATS_FILE))
  return stats.get('num_classes') if stats else None


def _num_records_from_input(files):
  """Returns the record count of the labeler's stats.json when `files` are exactly its shards
  (the total of pass 1's progress), else None."""
  stats = shards.read_json(os.path.join(os.path.dirname(files[0]), shards.STATS_FILE))
  if not stats or 'count' not in stats or sorted(stats.get('shards') or []) != sorted(
      os.path.basename(f) for f in files):
    return None
  return int(stats['count'])


def filter_records(config: FilterConfig) -> dict:
  """Filters and balances pseudo-label records as `config` says (config.progress: records per
  second of both passes).

  Returns the stats dict also written to OUTPUT_DIR/stats.json.  Raises ValueError for bad
  settings or an input without records, before reading any record.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config.validate()
  if config.runner == 'beam':
    from noisy_student_tf.selftrain.beam import filtering  # pylint: disable=g-import-not-at-top
    return filtering.filter_records(config)
  progress = config.progress
  files = shards.list_record_files(config.input)
  start = time.time()
  os.makedirs(config.output_dir, exist_ok=True)
  stats_path = os.path.join(config.output_dir, shards.STATS_FILE)
  shards.remove_if_exists(stats_path)
  num_classes = num_classes_of(config, files)
  k = config.per_class

  # Pass 1: counts, histograms and (when balancing) the top K per class.
  counts_in = np.zeros(num_classes or 0, np.int64)
  counts_above = np.zeros(num_classes or 0, np.int64)
  hist_in = np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64)
  pool = _TopKPool(k, num_classes) if k else None
  position = 0
  for labels, conf, _ in progress_lib.track(
      _read_batches(files, config.read_batch), 'ns-filter pass 1 (select)',
      _num_records_from_input(files), 'records', progress, size=lambda b: len(b[0])):
    n = len(labels)
    if n and (labels.min() < 0 or (num_classes and labels.max() >= num_classes)):
      raise ValueError(f'pseudo/label out of range [0, {num_classes}) in {config.input!r}: '
                       f'min {labels.min()}, max {labels.max()}')
    counts_in = shards.add_counts(counts_in, np.bincount(labels))
    hist_in += shards.confidence_histogram(conf)
    above = passes_threshold(conf, config.threshold)
    counts_above = shards.add_counts(counts_above, np.bincount(labels[above]))
    if pool is not None:
      pos = np.arange(position, position + n, dtype=np.int64)
      pool.add(labels[above], conf[above], pos[above])
    position += n
  num_input = position
  if num_input == 0:
    raise ValueError(f'the pseudo-label records in {config.input!r} hold no record')
  num_classes = num_classes or len(counts_in)
  counts_in = shards.add_counts(counts_in, np.zeros(num_classes, np.int64))
  counts_above = shards.add_counts(counts_above, np.zeros(num_classes, np.int64))

  if pool is not None:
    sel_labels, sel_conf, sel_pos = pool.result()
    order = np.argsort(sel_pos)
    sel_labels, sel_conf, sel_pos = sel_labels[order], sel_conf[order], sel_pos[order]
    copies = _copies_per_record(sel_labels, k, config.duplicate, config.seed)
    pool_peak = pool.peak
  else:
    sel_pos = copies = None
    pool_peak = 0

  # Pass 2: copy the selected serialized records into balanced shards.
  for stale in glob.glob(os.path.join(config.output_dir, f'{OUTPUT_PREFIX}-*.tfrecord*')):
    os.remove(stale)
  names = [shards.shard_name(OUTPUT_PREFIX, i, config.num_shards) for i in range(config.num_shards)]
  tmp_paths = [os.path.join(config.output_dir, n + shards.TMP_SUFFIX) for n in names]
  writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
  shard_sizes = np.zeros(config.num_shards, np.int64)
  counts_out = np.zeros(num_classes, np.int64)
  counts_unique = np.zeros(num_classes, np.int64)
  hist_out = np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64)
  next_shard = 0
  position = 0
  for labels, conf, serialized in progress_lib.track(
      _read_batches(files, config.read_batch, keep_serialized=True), 'ns-filter pass 2 (copy)',
      num_input, 'records', progress, size=lambda b: len(b[0])):
    n = len(serialized)
    if sel_pos is None:
      idx = np.flatnonzero(passes_threshold(conf, config.threshold))
      n_copies = np.ones(len(idx), np.int64)
    else:
      lo, hi = np.searchsorted(sel_pos, [position, position + n])
      idx = sel_pos[lo:hi] - position
      n_copies = copies[lo:hi]
    for i, c in zip(idx.tolist(), n_copies.tolist()):
      record = serialized[i]
      for _ in range(c):
        writers[next_shard].write(record)
        shard_sizes[next_shard] += 1
        next_shard = (next_shard + 1) % config.num_shards
    counts_out = shards.add_counts(counts_out, np.bincount(labels[idx], weights=n_copies,
                                                           minlength=num_classes).astype(np.int64))
    counts_unique = shards.add_counts(counts_unique, np.bincount(labels[idx], minlength=num_classes))
    hist_out += shards.confidence_histogram(conf[idx], weights=n_copies)
    position += n
  for w in writers:
    w.close()
  for tmp, name in zip(tmp_paths, names):
    os.replace(tmp, os.path.join(config.output_dir, name))

  stats = summarize(config, files, num_classes, num_input, counts_in, counts_above,
                    counts_unique, counts_out, hist_in, hist_out, shard_sizes, pool_peak,
                    time.time() - start)
  write_summary(config.output_dir, stats)
  seconds = stats['seconds']
  logging.info('ns-filter: %d records in, %d above threshold %.2f, %d unique kept, %d written to '
               '%d shards in %.1f s', num_input, stats['num_above_threshold'], config.threshold,
               stats['num_unique_kept'], stats['num_output'], config.num_shards, seconds)
  return stats


def summarize(config, files, num_classes, num_input, counts_in, counts_above, counts_unique,
              counts_out, hist_in, hist_out, shard_sizes, pool_peak, seconds):
  """stats.json's dict from the filter's counts: per-class int arrays of the input, above the
  threshold, unique kept and written records, the confidence histograms of input and output, the
  records per output shard, the candidate pool's peak size and the run's seconds."""
  return {
      'input': config.input, 'input_files': len(files), 'output_dir': config.output_dir,
      'threshold': config.threshold, 'per_class': config.per_class, 'duplicate': config.duplicate,
      'num_classes': int(num_classes), 'num_input': int(num_input),
      'num_above_threshold': int(np.sum(counts_above)), 'num_unique_kept': int(np.sum(counts_unique)),
      'num_output': int(np.sum(counts_out)),
      'class_counts_input': np.asarray(counts_in).tolist(),
      'class_counts_above_threshold': np.asarray(counts_above).tolist(),
      'class_counts_unique_kept': np.asarray(counts_unique).tolist(),
      'class_counts_output': np.asarray(counts_out).tolist(),
      'confidence_histogram': {'bin_edges': shards.bin_edges(), 'input': np.asarray(hist_in).tolist(),
                               'output': np.asarray(hist_out).tolist()},
      'num_shards': config.num_shards, 'shard_sizes': np.asarray(shard_sizes).tolist(),
      'candidate_pool_peak': int(pool_peak),
      'seconds': round(seconds, 3), 'records_per_second': round(num_input / max(seconds, 1e-9), 1),
  }


def write_summary(output_dir, stats):
  """Writes OUTPUT_DIR/plot.png, then OUTPUT_DIR/stats.json (the completion marker)."""
  _plot(stats, os.path.join(output_dir, PLOT_FILE))
  shards.write_json(os.path.join(output_dir, shards.STATS_FILE), stats)


def is_complete(output_dir):
  """True when `output_dir` holds a finished ns-filter output (its stats.json is written last)."""
  return os.path.exists(os.path.join(output_dir, shards.STATS_FILE))


def _plot(stats, path):
  """Writes a PNG: class counts before/after filtering, and the confidence histograms."""
  from noisy_student_tf.selftrain import plots  # pylint: disable=g-import-not-at-top
  plots.filter_plot(stats, path)
