"""ns-filter's library: confidence threshold and per-class balancing of pseudo-label records.

The paper keeps the images whose pseudo-label confidence is at least 0.3, then per class the K
most confident (K = 130K on ImageNet), and duplicates the images of classes with fewer than K
until they have K.  This runs in streaming passes over the shards, in the same reading order:

1. read only `pseudo/label` and `pseudo/confidence` (vectorised `tf.io.parse_example`): the
   counts and, when balancing, per class a histogram of the confidences above the threshold in
   fine bins, which gives each class's cut bin (class_selection.py);
1b. only when some class's K-th record lies inside a bin: read labels and confidences once more
   and count the distinct confidences in the cut bins, which makes every cut exact (ties at the
   cut confidence go to the earlier positions);
2. read the serialized records again and copy each selected one, unchanged, as many times as its
   class needs, dealing the copies round-robin over the output shards so that the shards are
   balanced and the duplicates of one image land in different shards.

Memory grows with neither K nor the number of records: classes x bins counts (about 130 MB at
1000 classes), the cut bins' distinct confidences, and one bit per kept record of the classes
given an extra copy.

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
from noisy_student_tf.selftrain import class_selection
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.beam import runner_settings
from noisy_student_tf import settings
from noisy_student_tf.settings import setting

OUTPUT_PREFIX = 'balanced'
PLOT_FILE = 'plot.png'
# The selection rule's parts, also used by the Beam filter (beam/filtering.py).
passes_threshold = class_selection.passes_threshold
class_copies = class_selection.class_copies
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

  @tf.autograph.experimental.do_not_convert
  def parse(serialized):
    parsed = tf.io.parse_example(serialized, features)
    out = (parsed[LABEL_KEY], parsed[CONFIDENCE_KEY])
    return out + (serialized,) if keep_serialized else out

  ds = tf.data.TFRecordDataset(files).batch(batch)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
  for item in ds.as_numpy_iterator():
    yield item if keep_serialized else item + (None,)


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
  second of every pass).

  Returns the stats dict also written to OUTPUT_DIR/stats.json.  Raises ValueError for bad
  settings or an input without records, before reading any record.
  """
  config.validate()
  if config.runner == 'beam':
    from noisy_student_tf.selftrain.beam import filtering  # pylint: disable=g-import-not-at-top
    return filtering.filter_records(config)
  files = shards.list_record_files(config.input)
  start = time.time()
  os.makedirs(config.output_dir, exist_ok=True)
  shards.remove_if_exists(os.path.join(config.output_dir, shards.STATS_FILE))
  first, histograms = _first_pass(config, files, num_classes_of(config, files))
  selector, look_peak = (_selector(config, files, first, histograms) if config.per_class
                         else (None, 0))
  del histograms  # classes x bins counts: not needed in the copy pass
  out = _copy_pass(config, files, first['num_classes'], first['num_input'], selector)
  stats = summarize(config, files, first['num_classes'], first['num_input'], first['counts_in'],
                    first['counts_above'], out['counts_unique'], out['counts_out'],
                    first['hist_in'], out['hist_out'], out['shard_sizes'], look_peak,
                    time.time() - start)
  write_summary(config.output_dir, stats)
  logging.info('ns-filter: %d records in, %d above threshold %.2f, %d unique kept, %d written to '
               '%d shards in %.1f s', first['num_input'], stats['num_above_threshold'],
               config.threshold, stats['num_unique_kept'], stats['num_output'],
               config.num_shards, stats['seconds'])
  return stats


def _track(batches, name, total, progress):
  """`batches` of (labels, confidence, ...) with progress reported as records."""
  return progress_lib.track(batches, name, total, 'records', progress, size=lambda b: len(b[0]))


def _selector(config, files, first, histograms):
  """The copy pass's class_selection.Selector from pass 1's histograms (reading the labels and
  confidences once more when a cut lies inside a bin); returns (selector, the most cut-bin
  entries held at once)."""
  def read_again():
    for labels, conf, _ in _track(_read_batches(files, config.read_batch),
                                  'ns-filter pass 1b (cut bins)', first['num_input'],
                                  config.progress):
      yield labels, conf

  plan, look_peak = class_selection.plan_selection(histograms, config.per_class,
                                                   first['num_classes'], read_again)
  return class_selection.Selector(plan, config.duplicate, config.seed), look_peak


def _first_pass(config, files, num_classes):
  """Pass 1 over labels and confidences: returns ({'num_input', 'num_classes', 'counts_in',
  'counts_above', 'hist_in'}, class_selection.ClassHistograms or None without per_class).
  Raises ValueError for labels out of range or no record."""
  counts_in = np.zeros(num_classes or 0, np.int64)
  counts_above = np.zeros(num_classes or 0, np.int64)
  hist_in = np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64)
  histograms = (class_selection.ClassHistograms(config.threshold, num_classes)
                if config.per_class else None)
  num_input = 0
  for labels, conf, _ in _track(_read_batches(files, config.read_batch),
                                'ns-filter pass 1 (select)', _num_records_from_input(files),
                                config.progress):
    if len(labels) and (labels.min() < 0 or (num_classes and labels.max() >= num_classes)):
      raise ValueError(f'pseudo/label out of range [0, {num_classes}) in {config.input!r}: '
                       f'min {labels.min()}, max {labels.max()}')
    counts_in = shards.add_counts(counts_in, np.bincount(labels))
    hist_in += shards.confidence_histogram(conf)
    counts_above = shards.add_counts(
        counts_above, np.bincount(labels[passes_threshold(conf, config.threshold)]))
    if histograms is not None:
      histograms.add(labels, conf)
    num_input += len(labels)
  if num_input == 0:
    raise ValueError(f'the pseudo-label records in {config.input!r} hold no record')
  num_classes = num_classes or len(counts_in)
  return {'num_input': num_input, 'num_classes': num_classes, 'hist_in': hist_in,
          'counts_in': shards.add_counts(counts_in, np.zeros(num_classes, np.int64)),
          'counts_above': shards.add_counts(counts_above, np.zeros(num_classes, np.int64))
          }, histograms


def _copy_pass(config, files, num_classes, num_input, selector):
  """Pass 2: copies the records `selector` keeps (class_selection.Selector; None: every record
  above the threshold, once) into the balanced shards, dealt round-robin.  Returns
  {'counts_unique', 'counts_out', 'hist_out', 'shard_sizes'}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for stale in glob.glob(os.path.join(config.output_dir, f'{OUTPUT_PREFIX}-*.tfrecord*')):
    os.remove(stale)
  names = [shards.shard_name(OUTPUT_PREFIX, i, config.num_shards) for i in range(config.num_shards)]
  tmp_paths = [os.path.join(config.output_dir, n + shards.TMP_SUFFIX) for n in names]
  writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
  counts_out = np.zeros(num_classes, np.int64)
  counts_unique = np.zeros(num_classes, np.int64)
  hist_out = np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64)
  num_written = 0
  for labels, conf, serialized in _track(_read_batches(files, config.read_batch,
                                                       keep_serialized=True),
                                         'ns-filter pass 2 (copy)', num_input, config.progress):
    if selector is None:
      idx = np.flatnonzero(passes_threshold(conf, config.threshold))
      n_copies = np.ones(len(idx), np.int64)
    else:
      idx, n_copies = selector.select(labels, conf)
    num_written = _deal(writers, serialized, idx, n_copies, num_written)
    counts_out += np.bincount(labels[idx], weights=n_copies, minlength=num_classes).astype(np.int64)
    counts_unique += np.bincount(labels[idx], minlength=num_classes)
    hist_out += shards.confidence_histogram(conf[idx], weights=n_copies)
  for w in writers:
    w.close()
  for tmp, name in zip(tmp_paths, names):
    os.replace(tmp, os.path.join(config.output_dir, name))
  shard_sizes = np.full(config.num_shards, num_written // config.num_shards, np.int64)
  shard_sizes[:num_written % config.num_shards] += 1
  return {'counts_unique': counts_unique, 'counts_out': counts_out, 'hist_out': hist_out,
          'shard_sizes': shard_sizes}


def _deal(writers, serialized, idx, n_copies, num_written):
  """Writes serialized[i] n_copies times for each i of `idx`, each copy to the next writer in
  turn (copy number t of the whole run goes to writer t % len(writers)); returns the new total."""
  num_writers = len(writers)
  for i, c in zip(idx.tolist(), n_copies.tolist()):
    record = serialized[i]
    for t in range(num_written, num_written + c):
      writers[t % num_writers].write(record)
    num_written += c
  return num_written


def summarize(config, files, num_classes, num_input, counts_in, counts_above, counts_unique,
              counts_out, hist_in, hist_out, shard_sizes, pool_peak, seconds):
  """stats.json's dict from the filter's counts: per-class int arrays of the input, above the
  threshold, unique kept and written records, the confidence histograms of input and output, the
  records per output shard, the most selection candidates held at once (`candidate_pool_peak`:
  the cut bins' distinct confidences of pass 1b, 0 without it) and the run's seconds."""
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
