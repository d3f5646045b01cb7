"""What a `tfrecord:` source holds, from one scan of its labels: examples per file, the stored
label range and class histogram.  The scan is cached, so epochs, `steps_per_epoch` and the class
count are known without a flag, and bad labels stop a run before any work.

ImageNet-format records (the official build script) store `image/class/label` 1-based (0 is
background), so they are read with `label_offset=1`; labels are checked against that offset and
against the class count, with a message naming the source and the offending value.

  stats = scan_records(source, cache_dir=W)      # cached in W/records-<fingerprint>.json
  source = describe(source, num_classes=None, cache_dir=W)
"""

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import sources as sources_lib

log = logging.getLogger('noisy_student_tf.data')

PSEUDO_LABEL_KEY = 'pseudo/label'
MISSING = -(2 ** 62)  # stored label of a record without image/class/label
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RecordStats:
  """Counts of one set of record files: per file, and per stored (raw, un-offset) label."""
  files: Tuple[str, ...]
  counts: Tuple[int, ...]
  label_counts: Dict[int, int]  # stored label -> examples; records without a label not included
  num_unlabeled: int

  @property
  def num_examples(self) -> int:
    """Total records."""
    return int(sum(self.counts))


def default_cache_dir():
  """$NS_CACHE_DIR, else ~/.cache/noisy_student_tf/record_stats: for binaries without a work dir."""
  return os.environ.get('NS_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'noisy_student_tf', 'record_stats')


def fingerprint(files):
  """A hex digest of the file paths, sizes and modification times (the cache key)."""
  h = hashlib.sha256()
  for f in files:
    st = os.stat(f)
    h.update(f'{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:20]


def _scan(files, label_key):
  counts = np.zeros(len(files), np.int64)
  label_counts = {}
  missing = 0
  feature = {label_key: tf.io.FixedLenFeature([], tf.int64, default_value=MISSING)}
  ds = tf.data.Dataset.from_tensor_slices(list(files)).enumerate().interleave(
      lambda i, f: tf.data.TFRecordDataset(f).batch(4096).map(
          lambda r: (i, tf.io.parse_example(r, feature)[label_key])),
      cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  start = last = time.time()
  for i, labels in ds.as_numpy_iterator():
    counts[i] += labels.size
    known = labels[labels != MISSING]
    missing += labels.size - known.size
    for value, c in zip(*np.unique(known, return_counts=True)):
      label_counts[int(value)] = label_counts.get(int(value), 0) + int(c)
    if time.time() - last > 10:
      last = time.time()
      log.info('scanning labels of %d record files: %d records, %.0f/s', len(files),
               counts.sum(), counts.sum() / (last - start))
  return RecordStats(tuple(files), tuple(int(c) for c in counts), label_counts, int(missing))


def scan_records(files, cache_dir=None, label_key=sources_lib.TFRECORD_LABEL_KEY):
  """Counts the records of each file and the stored labels, reading every record once.

  files: record file paths.  cache_dir: where the result is cached, keyed by the files' paths,
  sizes and modification times (None: no cache).  Returns RecordStats.
  """
  files = tuple(files)
  path = None
  if cache_dir:
    path = os.path.join(cache_dir, f'records-{fingerprint(files)}.json')
    if os.path.exists(path):
      with open(path) as f:
        cached = json.load(f)
      if cached.get('version') == CACHE_VERSION and tuple(cached['files']) == files:
        return RecordStats(files, tuple(cached['counts']),
                           {int(k): v for k, v in cached['label_counts'].items()},
                           cached['num_unlabeled'])
  start = time.time()
  stats = _scan(files, label_key)
  log.info('scanned %d records in %d files in %.1f s', stats.num_examples, len(files),
           time.time() - start)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    model_dir_lib.atomic_write_text(path, json.dumps({
        'version': CACHE_VERSION, 'files': list(files), 'counts': list(stats.counts),
        'label_counts': {str(k): v for k, v in sorted(stats.label_counts.items())},
        'num_unlabeled': stats.num_unlabeled}, indent=1) + '\n')
  return stats


def check_labels(stats, spec, label_offset, num_classes=None, labeled=True):
  """Checks stored labels against the offset and class count; returns the class count.

  The class count is `num_classes` when given, else the largest label after the offset plus
  one.  Raises ValueError naming the source and the value: a stored label below label_offset
  (e.g. 0 with offset 1: the records are 0-based), a label >= num_classes, records without a
  label in a labeled source, or fewer than 2 classes.
  """
  if labeled and stats.num_unlabeled:
    raise ValueError(f'labeled source {spec!r}: {stats.num_unlabeled} of {stats.num_examples} '
                     f'records have no {sources_lib.TFRECORD_LABEL_KEY}')
  if not stats.label_counts:
    if labeled:
      raise ValueError(f'labeled source {spec!r} holds no labeled record')
    return num_classes
  low, high = min(stats.label_counts), max(stats.label_counts)
  if low - label_offset < 0:
    hint = (' (0-based records: use --label_offset=0)' if low == 0 and label_offset == 1 else
            ' (1-based ImageNet records need --label_offset=1)' if label_offset == 0 else '')
    raise ValueError(f'source {spec!r} holds the stored label {low} ({stats.label_counts[low]} '
                     f'records), below --label_offset={label_offset}: it would become class '
                     f'{low - label_offset}{hint}')
  found = high - label_offset + 1
  if low - label_offset > 0:
    log.warning('source %r: no record has class 0 (stored labels %d..%d, --label_offset=%d)%s',
                spec, low, high, label_offset,
                '; 1-based ImageNet records need --label_offset=1' if label_offset == 0 else '')
  if num_classes is not None and found > num_classes:
    raise ValueError(f'source {spec!r} holds the stored label {high} (class {high - label_offset} '
                     f'with --label_offset={label_offset}), out of range for --num_classes='
                     f'{num_classes} (classes 0..{num_classes - 1})')
  classes = num_classes if num_classes is not None else found
  if labeled and classes < 2:
    raise ValueError(f'labeled source {spec!r} must have >= 2 classes, got {classes} (stored '
                     f'labels {low}..{high}, --label_offset={label_offset})')
  return classes


def class_counts(stats, label_offset, num_classes):
  """Examples per class (list of num_classes ints) after the offset."""
  out = [0] * int(num_classes)
  for stored, c in stats.label_counts.items():
    if 0 <= stored - label_offset < num_classes:
      out[stored - label_offset] += c
  return out


def describe(source, *, label_offset=0, num_classes=None, cache_dir=None, scan=True,
             labeled=True):
  """A tfrecord: source with its example count, class count and per-file counts filled in.

  source: a Source from open_source('tfrecord:...').  num_classes: the class count when known
  (checked against the labels).  scan: read the labels once (cached in cache_dir); without it
  the source gets only num_classes (which must then be given).  pseudo: sources get their
  per-file counts when their writer did not record them; other sources are returned as they
  are.  Returns a Source.
  Raises ValueError naming the source when the class count cannot be known or the labels are
  wrong (see check_labels).
  """
  if source.records is not None and source.spec.startswith('pseudo:'):
    # Pseudo-label records carry their class count; what a scan adds is the count per file
    # (ns-label and ns-filter record it beside their shards; other writers may not).
    if source.records.counts is not None or not scan:
      return source
    stats = scan_records(source.records.files, cache_dir, label_key=PSEUDO_LABEL_KEY)
    return _with_counts(source, stats, source.num_classes)
  if source.records is None or not source.spec.startswith('tfrecord:'):
    return source  # callers compare class counts, with messages that say what was expected
  if not scan:
    if num_classes is None and labeled:
      raise ValueError(f'the class count of {source.spec!r} is unknown: give --num_classes, or '
                       'let the labels be scanned once (--scan_records)')
    return dataclasses.replace(source, num_classes=num_classes)
  stats = scan_records(source.records.files, cache_dir)
  classes = check_labels(stats, source.spec, label_offset, num_classes, labeled=labeled)
  return _with_counts(source, stats, classes)


def _with_counts(source, stats, num_classes):
  plan = source.records
  num_examples = stats.num_examples
  if plan.shard[0] > 1:
    n, i = plan.shard
    num_examples = num_examples // n + (1 if i < num_examples % n else 0)
  return dataclasses.replace(source, records=dataclasses.replace(plan, counts=stats.counts),
                             num_classes=num_classes, num_examples=num_examples)
