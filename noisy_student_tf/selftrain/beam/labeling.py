"""ns-label as an Apache Beam pipeline (`ns-label --runner=beam`).

  items (beam/sources.py) -> RunInference(TeacherModelHandler) -> pseudo-label records
      -> WriteToTFRecord (OUTPUT_DIR/pseudo-SSSSS-of-NNNNN.tfrecord, num_shards shards)
      -> stats parts, summed -> stats.json and plot.png, as ns-label writes them

The records are ns-label's: the same preprocessing and batches (label.labeling_dataset), the same
targets and record format (label.pseudo_records: data/records.py's make_example, source ids,
top-k, temperature, the temperature-1 confidence).  Which record lands in which shard is Beam's
choice, not ns-label's shard-per-source-shard.  The run is whole or nothing (beam/staging.py): a
rerun after a kill starts over and never leaves partial or duplicated output; a complete
output_dir (stats.json) is returned as it is.  Per-shard stats files (shard_stats/) are not
written, so readers count these shards' records themselves.
"""

import os
import time

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
import numpy as np

from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.beam import model_handler
from noisy_student_tf.selftrain.beam import options as options_lib
from noisy_student_tf.selftrain.beam import sources as beam_sources
from noisy_student_tf.selftrain.beam import staging

PARTS_FILE = 'label_counts.json'
# Model batches per RunInference call: each call builds one labeling pipeline (ns-label builds
# one per shard), whose start costs about as much as labeling a few batches of tiny images.
BATCHES_PER_CALL = 8


class SumLabelCounts(beam.CombineFn):
  """Sums per-chunk counts (label.LabelCounts.as_dict fields plus the skipped images) into one
  part in the format label.summarize takes."""

  def __init__(self, num_classes):
    self._num_classes = num_classes

  def create_accumulator(self):
    """An empty part."""
    return {'count': 0, 'class_counts': np.zeros(self._num_classes, np.int64),
            'confidence_histogram': np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64),
            'compared_with_source_labels': 0, 'agree_with_source_labels': 0,
            'corrupt_skipped': 0, 'too_large_skipped': 0}

  def add_input(self, accumulator, part):
    """Adds one chunk's part (a dict of ints and int lists)."""
    for key, value in part.items():
      accumulator[key] = accumulator[key] + (np.asarray(value, np.int64)
                                             if isinstance(value, list) else value)
    return accumulator

  def merge_accumulators(self, accumulators):
    """Sums partial sums."""
    out = self.create_accumulator()
    for acc in accumulators:
      out = self.add_input(out, acc)
    return out

  def extract_output(self, accumulator):
    """The sum as JSON values."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else int(v) for k, v in accumulator.items()}


class ChunkToRecords(beam.DoFn):
  """LabeledChunk -> its serialized records (main output) and its counts (output 'counts')."""

  def __init__(self, config, teacher_name, num_classes, compare):
    self._config = config
    self._teacher_name = teacher_name
    self._num_classes = num_classes
    self._compare = compare

  def process(self, result):
    """Yields the records of one RunInference result, then its counts as a tagged output."""
    chunk = result.inference
    counts = label_lib.LabelCounts(self._num_classes, self._compare)
    if len(chunk.source_ids):
      serialized, label, confidence = label_lib.pseudo_records(
          chunk.logits, chunk.encoded, chunk.source_ids, self._config, self._teacher_name)
      yield from serialized
      counts.add(label, confidence, chunk.truth)
    yield beam.pvalue.TaggedOutput('counts', {
        **counts.as_dict(), 'corrupt_skipped': chunk.corrupt_skipped,
        'too_large_skipped': chunk.too_large_skipped})


def _write_json(obj, path):
  shards.write_json(path, obj)


def build(pipeline, config, source, model_config, compare, staging_dir):
  """Adds the labeling of `source` to `pipeline`: records into `staging_dir`'s shards, the summed
  counts into staging_dir/label_counts.json."""
  num_classes = model_config.model.num_classes
  kind = beam_sources.item_kind(source)
  handler = model_handler.TeacherModelHandler(config, kind,
                                              config.batch_size * BATCHES_PER_CALL)
  teacher_name = label_lib.teacher_name_of(config, model_config)
  records, counts = (
      beam_sources.read_items(pipeline, source)
      | 'Teacher' >> RunInference(handler)
      | 'Records' >> beam.ParDo(ChunkToRecords(config, teacher_name, num_classes, compare))
      .with_outputs('counts', main='records'))
  _ = records | 'Write' >> beam.io.WriteToTFRecord(
      staging.write_prefix(staging_dir, label_lib.OUTPUT_PREFIX),
      file_name_suffix=staging.SUFFIX, num_shards=config.num_shards,
      shard_name_template=staging.SHARD_TEMPLATE)
  _ = (counts
       | 'SumCounts' >> beam.CombineGlobally(SumLabelCounts(num_classes))
       | 'WriteCounts' >> beam.Map(_write_json, os.path.join(staging_dir, PARTS_FILE)))


def label(config):
  """Runs ns-label's labeling as a Beam pipeline (config.runner == 'beam', options from
  config.beam_options).  Returns the stats of label.label ({..., 'complete': True}); raises
  ValueError for bad settings, a source Beam cannot read, a missing teacher, an empty source or
  an output_dir made with other settings, before any labeling."""
  config.validate()
  options = options_lib.pipeline_options(config.beam_options)
  model_config, source, compare = label_lib.prepare(config)
  if label_lib.is_complete(config.output_dir):
    stats = shards.read_json(os.path.join(config.output_dir, shards.STATS_FILE))
    return {**stats, 'complete': True}
  start = time.time()
  staging_dir = staging.begin(config.output_dir, label_lib.OUTPUT_PREFIX,
                              stale=(label_lib.SHARD_STATS_DIR,))
  with beam.Pipeline(options=options) as pipeline:
    build(pipeline, config, source, model_config, compare, staging_dir)
  part = shards.read_json(os.path.join(staging_dir, PARTS_FILE))
  part['seconds'] = round(time.time() - start, 3)
  staging.publish(config.output_dir, label_lib.OUTPUT_PREFIX, config.num_shards)
  stats = label_lib.summarize([part], config, model_config, label_lib.teacher_name_of(
      config, model_config), label_lib.resolution_of(config, model_config))
  label_lib.write_summary(config.output_dir, stats)
  return {**stats, 'complete': True}
