"""ns-filter as an Apache Beam pipeline (`ns-filter --runner=beam`).

  records of the input files, each with its position (file index, record index)
    -> label and confidence -> input counts
    -> confidence >= threshold -> per class the top K by (confidence, position) (top_k.py), or
       every record above the threshold without per_class
    -> copies per kept record (filter.class_copies: up to K, per class)
    -> joined back to the serialized records by position -> each copied as often as it counts
    -> reshuffled -> WriteToTFRecord of num_shards shards (balanced-SSSSS-of-NNNNN.tfrecord)
  then stats.json and plot.png as ns-filter writes them (filter.summarize / write_summary).

The records selected, their copies and every count are ns-filter's; the order of the records and
which copy lands in which shard are Beam's (shards are about equal in size, not exactly).  The
run is whole or nothing (beam/staging.py); like ns-filter, a rerun filters anew.
"""

import os
import time

import apache_beam as beam
import numpy as np
import tensorflow as tf

from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.beam import options as options_lib
from noisy_student_tf.selftrain.beam import staging
from noisy_student_tf.selftrain.beam import top_k

COUNTS_FILE = 'filter_counts.json'
SIZES_FILE = 'shard_sizes.json'


def _read_positioned(indexed_file):
  """Yields ((file index, record index), serialized) for every record of one input file."""
  file_index, path = indexed_file
  for record_index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
    yield (file_index, record_index), record


def _label_and_confidence(serialized):
  """(pseudo/label, pseudo/confidence) of one serialized record (the confidence as stored, float32)."""
  feature = tf.train.Example.FromString(serialized).features.feature
  return (int(feature[filter_lib.LABEL_KEY].int64_list.value[0]),
          float(feature[filter_lib.CONFIDENCE_KEY].float_list.value[0]))


class CountClasses(beam.CombineFn):
  """Per-class counts and a confidence histogram (shards.confidence_histogram, as ns-filter's)
  of (label, confidence, weight) triples, plus the label range: {'num', 'counts', 'histogram',
  'min_label', 'max_label'}.  Confidences wait in a buffer and are binned in batches."""

  BUFFER = 4096

  def create_accumulator(self):
    """Empty: ({label: weight}, histogram, number of triples, pending (confidence, weight)s)."""
    return {}, np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64), 0, []

  def _flush(self, acc):
    counts, histogram, num, pending = acc
    if pending:
      conf, weights = zip(*pending)
      histogram = histogram + shards.confidence_histogram(np.float32(conf), weights=weights)
    return counts, histogram, num, []

  def add_input(self, acc, triple):
    """Counts one (label, confidence, weight)."""
    counts, histogram, num, pending = acc
    label, confidence, weight = triple
    counts[label] = counts.get(label, 0) + weight
    pending.append((confidence, weight))
    acc = counts, histogram, num + 1, pending
    return self._flush(acc) if len(pending) >= self.BUFFER else acc

  def merge_accumulators(self, accumulators):
    """Sums partial counts."""
    counts, histogram, num = {}, np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64), 0
    for acc in accumulators:
      c, h, n, _ = self._flush(acc)
      for key, value in c.items():
        counts[key] = counts.get(key, 0) + value
      histogram, num = histogram + h, num + n
    return counts, histogram, num, []

  def extract_output(self, acc):
    """The counts as JSON values."""
    counts, histogram, num, _ = self._flush(acc)
    dense = np.zeros(max(max(counts, default=-1) + 1, 0), np.int64)
    for key, value in counts.items():
      if key >= 0:
        dense[key] = value
    return {'num': num, 'counts': dense.tolist(), 'histogram': histogram.tolist(),
            'min_label': min(counts, default=None), 'max_label': max(counts, default=None)}


def _copies_of_class(class_and_best, k, duplicate, seed):
  """Yields (position, (label, confidence, copies)) for the kept records of one class."""
  label, best = class_and_best
  best = sorted(best, key=lambda c: (c[1], c[2]))  # position order, as filter.class_copies wants
  for (confidence, fi, ri), copies in zip(best, filter_lib.class_copies(len(best), k, duplicate,
                                                                        seed, label)):
    yield (fi, ri), (label, confidence, int(copies))


def _copies_out(joined):
  """Yields a record as many times as it was chosen (nothing for records not chosen)."""
  _, grouped = joined
  for record in grouped['record']:
    for _, _, copies in grouped['choice']:
      for _ in range(copies):
        yield record


def _count_records(path):
  """(shard name, number of records) of one written shard."""
  return os.path.basename(path), int(tf.data.TFRecordDataset(path).reduce(0, lambda n, _: n + 1))


def _write_json(obj, path):
  shards.write_json(path, obj)


def build(pipeline, config, files, staging_dir):
  """Adds the filtering of `files` to `pipeline`: shards into `staging_dir`, the counts into
  staging_dir/filter_counts.json and the shard sizes into staging_dir/shard_sizes.json."""
  records = (pipeline
             | 'ListFiles' >> beam.Create(list(enumerate(files)))
             | 'ReadRecords' >> beam.FlatMap(_read_positioned)
             | 'SpreadRecords' >> beam.Reshuffle())
  scored = records | 'Score' >> beam.MapTuple(
      lambda pos, r: (pos, _label_and_confidence(r) + (r,)))  # (label, confidence, record)
  above = scored | 'Threshold' >> beam.Filter(
      lambda s: bool(filter_lib.passes_threshold(s[1][1], config.threshold)))
  if config.per_class:
    chosen = (above
              | 'Candidates' >> beam.MapTuple(lambda pos, lcr: (lcr[0], (lcr[1],) + tuple(pos)))
              | 'TopK' >> top_k.TopKPerClass(config.per_class)
              | 'Copies' >> beam.FlatMap(_copies_of_class, config.per_class, config.duplicate,
                                         config.seed))
  else:
    chosen = above | 'Once' >> beam.MapTuple(lambda pos, lcr: (pos, (lcr[0], lcr[1], 1)))
  kept_records = above | 'Records' >> beam.MapTuple(lambda pos, lcr: (pos, lcr[2]))
  written = ({'record': kept_records, 'choice': chosen}
             | 'Join' >> beam.CoGroupByKey()
             | 'Duplicate' >> beam.FlatMap(_copies_out)
             | 'Shuffle' >> beam.Reshuffle()
             | 'Write' >> beam.io.WriteToTFRecord(
                 staging.write_prefix(staging_dir, filter_lib.OUTPUT_PREFIX),
                 file_name_suffix=staging.SUFFIX, num_shards=config.num_shards,
                 shard_name_template=staging.SHARD_TEMPLATE))
  counts = {
      'input': scored | 'InputTriples' >> beam.MapTuple(lambda _, lc: (lc[0], lc[1], 1)),
      'above': above | 'AboveTriples' >> beam.MapTuple(lambda _, lc: (lc[0], lc[1], 1)),
      'unique': chosen | 'UniqueTriples' >> beam.MapTuple(lambda _, c: (c[0], c[1], 1)),
      'output': chosen | 'OutputTriples' >> beam.MapTuple(lambda _, c: (c[0], c[1], c[2])),
  }
  summed = [triples | f'Count_{name}' >> beam.CombineGlobally(CountClasses())
            | f'Name_{name}' >> beam.Map(lambda c, n=name: (n, c))
            for name, triples in counts.items()]
  _ = (summed | 'AllCounts' >> beam.Flatten() | 'CountsDict' >> beam.combiners.ToDict()
       | 'WriteCounts' >> beam.Map(_write_json, os.path.join(staging_dir, COUNTS_FILE)))
  _ = (written | 'CountShards' >> beam.Map(_count_records) | 'SizesDict' >> beam.combiners.ToDict()
       | 'WriteSizes' >> beam.Map(_write_json, os.path.join(staging_dir, SIZES_FILE)))


def _check_counts(config, counts, num_classes):
  """Raises ValueError, as ns-filter does, for an input without records or labels out of range."""
  seen = counts['input']
  if seen['num'] == 0:
    raise ValueError(f'the pseudo-label records in {config.input!r} hold no record')
  if seen['min_label'] < 0 or (num_classes and seen['max_label'] >= num_classes):
    raise ValueError(f'pseudo/label out of range [0, {num_classes}) in {config.input!r}: min '
                     f'{seen["min_label"]}, max {seen["max_label"]}')


def filter_records(config):
  """Runs ns-filter as a Beam pipeline (config.runner == 'beam', options from
  config.beam_options).  Returns the stats ns-filter returns (also OUTPUT_DIR/stats.json); raises
  ValueError for bad settings or an input without records (that one after reading)."""
  config.validate()
  options = options_lib.pipeline_options(config.beam_options)
  files = shards.list_record_files(config.input)
  num_classes = filter_lib.num_classes_of(config, files)
  start = time.time()
  staging_dir = staging.begin(config.output_dir, filter_lib.OUTPUT_PREFIX)
  with beam.Pipeline(options=options) as pipeline:
    build(pipeline, config, files, staging_dir)
  counts = shards.read_json(os.path.join(staging_dir, COUNTS_FILE))
  _check_counts(config, counts, num_classes)
  num_classes = num_classes or len(counts['input']['counts'])
  per_class = {name: shards.add_counts(np.asarray(c['counts'], np.int64),
                                       np.zeros(num_classes, np.int64))
               for name, c in counts.items()}
  sizes = shards.read_json(os.path.join(staging_dir, SIZES_FILE))
  names = staging.publish(config.output_dir, filter_lib.OUTPUT_PREFIX, config.num_shards)
  stats = filter_lib.summarize(
      config, files, num_classes, counts['input']['num'], per_class['input'], per_class['above'],
      per_class['unique'], per_class['output'], counts['input']['histogram'],
      counts['output']['histogram'], [sizes.get(n, 0) for n in names], 0, time.time() - start)
  filter_lib.write_summary(config.output_dir, stats)
  return stats
