"""ns-label's library: the teacher, un-noised, predicts every unlabeled image.

The teacher runs in inference mode (EMA weights, no dropout / stochastic depth, batch-norm moving
statistics) on the evaluation preprocessing at its test resolution, as in the paper.  The source
is split into `num_shards` exact parts (data.sources sharding); each part becomes one record
shard `pseudo-NNNNN-of-NNNNN.tfrecord` (format: data/records.py), written under a temporary name
and renamed when whole, after its own stats file.  A shard is done when both exist, so a rerun
(or another worker) skips it and a killed run never leaves half a shard under the final name.
One process labels every shard (`shard_index=None`) or just one (`shard_index=i`, one worker of
many); whoever finishes the last shard writes OUTPUT_DIR/stats.json (the completion marker) and
OUTPUT_DIR/plot.png.

Pseudo-labels: 'soft' stores softmax(logits / temperature) (top-k of it when top_k is set), 'hard'
stores the one-hot argmax.  `pseudo/confidence` is always the teacher's own max softmax
probability (temperature 1), so that the filter's threshold means the same for every setting.

Images that cannot be decoded, and images over `max_image_pixels` (by their header, never
decoded: one huge image of a web crawl must not exhaust memory), are skipped and counted:
`corrupt_skipped` and `too_large_skipped` in the stats.
"""

import concurrent.futures
import dataclasses
import glob
import logging
import os
import time
from typing import Optional

import numpy as np

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import progress as progress_lib
from noisy_student_tf.data import preprocessing
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.beam import runner_settings
from noisy_student_tf import settings
from noisy_student_tf.settings import setting

LABEL_TYPES = ('soft', 'hard')
OUTPUT_PREFIX = 'pseudo'
SHARD_STATS_DIR = 'shard_stats'
RUN_FILE = 'label_config.json'
PLOT_FILE = 'plot.png'
# Settings that must not change between the workers / reruns filling one output_dir.
_FIXED_KEYS = ('model_dir', 'unlabeled', 'label_type', 'temperature', 'top_k', 'num_shards',
               'resolution', 'weights', 'generation', 'label_offset')


@dataclasses.dataclass(frozen=True)
class LabelConfig:
  """What ns-label does (each field's help: settings.help_of).

  Labels, if the source has any, are ignored except for reporting how often the teacher agrees
  with them.  With shard_index None one process labels every shard not yet done.
  """
  model_dir: str = setting('', 'The teacher: a model dir written by ns-train.')
  unlabeled: str = setting('', 'Source spec of the images to label, e.g. images:/data/*.jpg, '
                           'folder:PATH, tfds:cifar10:train (labels ignored).')
  output_dir: str = setting('', 'Where the record shards, stats.json and plot.png go.')
  label_type: str = setting('soft', "soft: the teacher's probabilities; hard: one-hot argmax.",
                            choices=LABEL_TYPES)
  temperature: float = setting(1.0, 'Softmax temperature of soft labels (> 0).')
  top_k: Optional[int] = setting(None, 'Store only the k most probable classes (ImageNet scale); '
                                 'unset: all classes.')
  num_shards: int = setting(1, 'Split the source into this many record shards (a rerun resumes '
                            'by shard).')
  shard_index: Optional[int] = setting(None, 'Label only this shard (one worker of num_shards); '
                                       'unset: every shard not yet done.', result=False)
  batch_size: int = setting(256, 'Images per inference batch.', result=False)
  resolution: Optional[int] = setting(None, "Test resolution (default: the teacher's).")
  weights: str = setting('ema', 'Which final weights of the teacher.',
                         choices=tuple(sorted(model_dir_lib.WEIGHT_FILES)))
  generation: int = setting(0, 'Self-training generation of the teacher (recorded in every '
                            'record).')
  data_dir: Optional[str] = setting(None, 'tensorflow-datasets data dir (tfds: sources).')
  label_offset: int = setting(0, 'Subtracted from stored labels of tfrecord: sources.')
  max_image_pixels: Optional[int] = setting(
      preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Skip (and count as too large) images with more '
      'pixels, height x width read from the header before decoding. 0: no limit.')
  progress: str = progress_lib.mode_setting()
  runner: str = runner_settings.runner_setting('label')
  beam_options: str = runner_settings.beam_options_setting()

  def validate(self):
    """Raises ValueError naming the first bad field (cheap checks, nothing read)."""
    settings.check_choices(self)
    runner_settings.check(self)
    if self.label_type not in LABEL_TYPES:
      raise ValueError(f'label_type must be one of {LABEL_TYPES}, got {self.label_type!r}')
    if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
      raise ValueError(f'temperature must be > 0, got {self.temperature!r}')
    if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 1):
      raise ValueError(f'top_k must be an integer >= 1 or None (all classes), got {self.top_k!r}')
    if not (isinstance(self.num_shards, int) and self.num_shards >= 1):
      raise ValueError(f'num_shards must be an integer >= 1, got {self.num_shards!r}')
    if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
      raise ValueError(f'shard_index must be in [0, num_shards={self.num_shards}), got '
                       f'{self.shard_index!r}')
    if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
      raise ValueError(f'batch_size must be an integer >= 1, got {self.batch_size!r}')
    if self.resolution is not None and not self.resolution >= 1:
      raise ValueError(f'resolution must be >= 1, got {self.resolution!r}')
    if self.weights not in model_dir_lib.WEIGHT_FILES:
      raise ValueError(f'weights must be one of {sorted(model_dir_lib.WEIGHT_FILES)}, got '
                       f'{self.weights!r}')
    if self.max_image_pixels is not None and not (isinstance(self.max_image_pixels, int) and
                                                  self.max_image_pixels >= 0):
      raise ValueError(f'max_image_pixels must be an integer >= 0 (0: no limit), got '
                       f'{self.max_image_pixels!r}')
    if not self.output_dir:
      raise ValueError('output_dir must be set')
    if not self.unlabeled:
      raise ValueError('unlabeled must be a source spec such as images:DIR/*.jpg')
    if not self.model_dir:
      raise ValueError('model_dir must be set: the teacher model dir')

  def fixed(self):
    """The settings every worker of one output_dir must share, as a JSON-able dict."""
    d = dataclasses.asdict(self)
    d['model_dir'] = os.path.abspath(self.model_dir)
    return {k: d[k] for k in _FIXED_KEYS}


def shard_path(output_dir, index, num_shards):
  """Path of record shard `index` of `num_shards`."""
  return os.path.join(output_dir, shards.shard_name(OUTPUT_PREFIX, index, num_shards))


def _shard_stats_path(output_dir, index, num_shards):
  return os.path.join(output_dir, SHARD_STATS_DIR,
                      shards.shard_name(OUTPUT_PREFIX, index, num_shards)[:-len('.tfrecord')] + '.json')


def shard_done(output_dir, index, num_shards):
  """True when shard `index` has its records and its stats under their final names."""
  return (os.path.exists(shard_path(output_dir, index, num_shards)) and
          os.path.exists(_shard_stats_path(output_dir, index, num_shards)))


def is_complete(output_dir):
  """True when every shard of `output_dir` is labeled and stats.json is written."""
  return os.path.exists(os.path.join(output_dir, shards.STATS_FILE))


def _check_output_dir(config):
  """Refuses an output_dir filled by other settings (mixing them would break exactly-once)."""
  previous = shards.read_json(os.path.join(config.output_dir, RUN_FILE))
  if previous is not None and previous != config.fixed():
    diff = {k: (previous.get(k), v) for k, v in config.fixed().items() if previous.get(k) != v}
    raise ValueError(f'output_dir {config.output_dir!r} holds pseudo-labels made with other '
                     f'settings {diff} (old, new); use another output_dir or delete it')
  for path in glob.glob(os.path.join(config.output_dir, '*.tfrecord')):
    parsed = shards.parse_shard_name(path)
    if parsed and parsed[2] != config.num_shards:
      raise ValueError(f'output_dir {config.output_dir!r} holds {os.path.basename(path)}, a shard of '
                       f'another num_shards than {config.num_shards}; use another output_dir')


def open_unlabeled(spec, *, data_dir=None, label_offset=0):
  """Opens the unlabeled source `spec` and checks it holds at least one image.

  Returns its Source; raises ValueError naming the spec when it is missing or empty.
  """
  from noisy_student_tf.data import sources  # pylint: disable=g-import-not-at-top
  try:
    source = sources.open_source(spec, data_dir=data_dir, label_offset=label_offset)
  except FileNotFoundError as e:
    raise ValueError(f'unlabeled source {spec!r}: {e}') from e
  empty = source.num_examples == 0
  if source.num_examples is None:
    empty = not any(True for _ in source.dataset.take(1))
  if empty:
    raise ValueError(f'unlabeled source {spec!r} is empty: nothing to label')
  return source


def _open_checked(config, teacher_classes):
  """Opens the whole source once to fail early on an empty one; returns its Source."""
  source = open_unlabeled(config.unlabeled, data_dir=config.data_dir,
                          label_offset=config.label_offset)
  if source.num_classes is not None and source.num_classes != teacher_classes:
    logging.info('unlabeled source has %d classes, the teacher %d: its labels are not compared',
                 source.num_classes, teacher_classes)
  return source


def pseudo_targets(logits, config):
  """Takes the teacher's logits [B, C]; returns (probabilities float32 [B, C] to store, confidence
  float32 [B], argmax int64 [B]) as `config` says (label_type, temperature)."""
  logits = logits.astype(np.float64)
  z = logits - logits.max(axis=1, keepdims=True)
  p1 = np.exp(z)
  p1 /= p1.sum(axis=1, keepdims=True)
  label = p1.argmax(axis=1)
  confidence = p1.max(axis=1)
  if config.label_type == 'hard':
    probs = np.eye(logits.shape[1])[label]
  elif config.temperature == 1:
    probs = p1
  else:
    pt = np.exp(z / config.temperature)
    probs = pt / pt.sum(axis=1, keepdims=True)
  return probs.astype(np.float32), confidence.astype(np.float32), label.astype(np.int64)


def pseudo_records(logits, encoded, source_ids, config, teacher_name):
  """The pseudo-label records of one batch: logits [B, C], B encoded images and B source ids.

  Returns (serialized tf.train.Example bytes [B], argmax int64 [B], confidence float32 [B]); the
  stored confidence is the teacher's own at temperature 1 (see the module docstring).  Each
  record is records.make_example's Example (with that confidence), serialized with its features
  in key order (as SerializeToString(deterministic=True)).
  """
  probs, confidence, label = pseudo_targets(logits, config)
  serialized = _encode_records([_as_bytes(e) for e in encoded],
                               [_as_bytes(s) for s in source_ids], probs, confidence,
                               top_k=config.top_k, teacher=_as_bytes(teacher_name),
                               generation=config.generation)
  return serialized, label, confidence


def _as_bytes(value):
  """bytes of a bytes / str / numpy or tensor scalar value (ids and images as batches give them)."""
  if hasattr(value, 'numpy'):
    value = value.numpy()
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, str):
    return value.encode('utf-8')
  return bytes(value)


# The tf.train.Example wire format, written directly: a protobuf object per record cost 37 us
# (10 classes) to 150 us (1000) per image, these bytes 12 to 45 us with the targets, and the
# image is copied once.  Feature kinds (Feature's oneof field numbers):
_BYTES, _FLOATS, _INT64S = 1, 2, 3


def _varint(value):
  """The protobuf varint of the int64 `value` (negative values as their 64-bit two's complement)."""
  value &= (1 << 64) - 1
  out = bytearray()
  while value > 0x7F:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _head(number, size):
  """Tag and length of a length-delimited protobuf field (number < 16) of `size` bytes."""
  return bytes((number << 3 | 2,)) + _varint(size)


def _entry_head(key, kind, size):
  """The bytes before the payload of one Features.feature entry: `key` -> a Feature of `kind`
  whose list holds a payload of `size` bytes (one bytes value, or the packed floats / varints)."""
  values = _head(1, size)
  feature = _head(kind, len(values) + size)
  entry_value = _head(2, len(feature) + len(values) + size)
  key_field = _head(1, len(key)) + key
  return (_head(1, len(key_field) + len(entry_value) + len(feature) + len(values) + size) +
          key_field + entry_value + feature + values)


def _entry(key, kind, payload):
  """One whole Features.feature entry (see _entry_head)."""
  return _entry_head(key, kind, len(payload)) + payload


def _encode_records(encoded, source_ids, probs, confidence, *, top_k, teacher, generation):
  """Serialized Examples of records.make_example(encoded[i], source_ids[i], probs[i], top_k,
  teacher, generation) with pseudo/confidence set to confidence[i], features in key order.

  encoded, source_ids: B bytes each; probs float32 [B, C]; confidence float32 [B].
  """
  probs = np.asarray(probs, np.float32)
  num, num_classes = probs.shape
  label = probs.argmax(axis=1)
  indices = None
  stored = probs
  if top_k is not None and int(top_k) < num_classes:
    indices = np.argsort(-probs, axis=1, kind='stable')[:, :int(top_k)]
    stored = np.take_along_axis(probs, indices, axis=1)
    varints = {k: _varint(int(k)) for k in np.unique(indices).tolist()}
    indices = indices.tolist()
  row = stored.shape[1] * 4
  flat = stored.astype('<f4').tobytes()
  conf = np.asarray(confidence, '<f4').tobytes()
  conf_head = _entry_head(b'pseudo/confidence', _FLOATS, 4)
  probs_head = _entry_head(b'pseudo/probabilities', _FLOATS, row)
  labels = {int(k): _entry(b'pseudo/label', _INT64S, _varint(int(k))) for k in np.unique(label)}
  label = label.tolist()
  generation = _entry(b'pseudo/generation', _INT64S, _varint(int(generation)))
  num_classes_entry = _entry(b'pseudo/num_classes', _INT64S, _varint(num_classes))
  teacher = _entry(b'pseudo/teacher', _BYTES, teacher)
  out = []
  for i in range(num):
    parts = [_entry_head(b'image/encoded', _BYTES, len(encoded[i])), encoded[i],
             _entry(b'image/source_id', _BYTES, source_ids[i]),
             conf_head, conf[4 * i:4 * i + 4], generation]
    if indices is not None:
      parts.append(_entry(b'pseudo/indices', _INT64S, b''.join(map(varints.get, indices[i]))))
    parts += [labels[label[i]], num_classes_entry, probs_head, flat[row * i:row * (i + 1)],
              teacher]
    out.append(b''.join([_head(1, sum(map(len, parts)))] + parts))  # Example.features
  return out


class LabelCounts:
  """Running counts of labeled images, the fields of a shard's stats: `count`, `class_counts`,
  `confidence_histogram`, `compared_with_source_labels`, `agree_with_source_labels`.

  `LabelCounts(num_classes, compare)`; `add(label, confidence, truth)` per batch (truth: the
  source's labels, -1 unknown; only counted with compare); `as_dict()`.
  """

  def __init__(self, num_classes, compare):
    self.compare = compare
    self.count = self.compared = self.agree = 0
    self.class_counts = np.zeros(num_classes, np.int64)
    self.hist = np.zeros(shards.NUM_CONFIDENCE_BINS, np.int64)

  def add(self, label, confidence, truth):
    """Counts one batch: argmax int64 [B], confidence float32 [B], source labels int64 [B]."""
    self.count += len(label)
    self.class_counts += np.bincount(label, minlength=len(self.class_counts))
    self.hist += shards.confidence_histogram(confidence)
    if self.compare:
      truth = np.asarray(truth)
      known = truth >= 0
      self.compared += int(known.sum())
      self.agree += int((truth[known] == label[known]).sum())

  def as_dict(self):
    """The counts as the JSON fields of a shard's stats."""
    return {'count': self.count, 'class_counts': self.class_counts.tolist(),
            'confidence_histogram': self.hist.tolist(),
            'compared_with_source_labels': self.compared, 'agree_with_source_labels': self.agree}


def labeling_dataset(source, config, model_config, resolution, counter):
  """ns-label's input batches over `source` (a sources.Source): pipeline.make_eval_dataset's (the
  evaluation crop at `resolution`, config.batch_size images each, the encoded bytes kept, corrupt
  and too large images skipped and counted in `counter`, a pipeline.CorruptCounter), each a dict
  of tensors 'image', 'label', 'source_id', 'encoded'.  On a host without accelerators the input
  pipeline runs on a private tf.data pool of input_threads() threads, without autotuning, so
  that it overlaps the forward pass instead of competing with it for every core.
  Returns the tf.data.Dataset (its `corrupt_counter` is `counter`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  dataset = pipeline.make_eval_dataset(
      source, batch_size=config.batch_size, resolution=resolution,
      convention=model_config.input, small_image=model_config.model.small_image,
      keep_encoded=True, skip_corrupt=True, corrupt_counter=counter,
      max_image_pixels=config.max_image_pixels)
  threads = input_threads()
  if threads:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    # The pool bounds the parallelism, so autotuning has nothing to tune here; and with it on,
    # deleting the iterator at the end of a shard waited 1.2-1.6 s in 3 of 5 runs on 2 cores
    # (tf.data's autotuning thread): a quarter of the 5-6 s that each of the 8 shards of
    # flags/cifar10_4000.cfg takes at 32 px.
    options.autotune.enabled = False
    dataset = dataset.with_options(options)
  dataset.corrupt_counter = counter
  return dataset


def input_threads():
  """Threads of the labeling input pipeline's private pool: None (tf.data's shared pool) on a
  host with a GPU or TPU, else one fewer than the cores this process may use, at least 1.

  On a CPU-only host the model's forward pass needs the cores too; in tf.data's shared pool the
  input workers and the model's ops oversubscribe them.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('TPU'):
    return None
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, (cores or 1) - 1)


def _label_shard(config, index, model_config, predict_fn, teacher_name, resolution, compare,
                 bar):
  """Labels shard `index`; writes its records and stats, then renames.  Returns its stats.
  bar: the run's progress_lib.Progress (images, skipped ones included)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  start = time.time()
  source = sources.open_source(config.unlabeled, data_dir=config.data_dir,
                               label_offset=config.label_offset, num_shards=config.num_shards,
                               shard_index=index)
  if bar.total is None and config.shard_index is not None:  # one shard: its size is the total
    bar.set_total(source.num_examples)
  bar.set_postfix(f'shard {index + 1}/{config.num_shards}')
  counter = pipeline.CorruptCounter()
  dataset = labeling_dataset(source, config, model_config, resolution, counter)
  final = shard_path(config.output_dir, index, config.num_shards)
  tmp = final + shards.TMP_SUFFIX
  counts = LabelCounts(model_config.model.num_classes, compare)
  seen_before = bar.n
  writer = tf.io.TFRecordWriter(tmp)

  def write(logits, encoded, source_ids, labels):
    serialized, label, confidence = pseudo_records(logits, encoded, source_ids, config,
                                                   teacher_name)
    for record in serialized:
      writer.write(record)
    counts.add(label, confidence, labels)

  # One batch's records are built and written on a second thread while the next batch is
  # predicted (the forward pass releases the GIL): on a CPU host that serial step would
  # otherwise leave the cores idle for a few percent of the run.
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='ns-label-write')
  pending = None
  try:
    for batch in dataset:
      logits = predict_fn(batch['image']).numpy()
      work = (logits, batch['encoded'].numpy(), batch['source_id'].numpy(),
              batch['label'].numpy())
      if pending is not None:
        pending.result()  # in order, at most one batch behind; raises the writer's error
        bar.update_to(seen_before + counts.count + counter.count)
      pending = pool.submit(write, *work)
    if pending is not None:
      pending.result()
    pool.shutdown()
    writer.close()
    bar.update_to(seen_before + counts.count + counter.count)
  except BaseException:
    pool.shutdown(cancel_futures=True)
    writer.close()
    shards.remove_if_exists(tmp)
    raise
  stats = {'shard_index': index, **counts.as_dict(),
           'corrupt_skipped': counter.count - counter.too_large,
           'too_large_skipped': counter.too_large, 'seconds': round(time.time() - start, 3)}
  shards.write_json(_shard_stats_path(config.output_dir, index, config.num_shards), stats)
  os.replace(tmp, final)
  logging.info('ns-label: shard %d/%d: %d images (%d corrupt, %d too large skipped) in %.1f s',
               index + 1, config.num_shards, stats['count'], stats['corrupt_skipped'],
               stats['too_large_skipped'], stats['seconds'])
  return stats


def _aggregate(config, model_config, teacher_name, resolution):
  """Sums the shard stats into OUTPUT_DIR/stats.json (+ plot.png); returns the dict."""
  parts = [shards.read_json(_shard_stats_path(config.output_dir, i, config.num_shards))
           for i in range(config.num_shards)]
  stats = summarize(parts, config, model_config, teacher_name, resolution)
  write_summary(config.output_dir, stats)
  return stats


def summarize(parts, config, model_config, teacher_name, resolution):
  """The run's stats (stats.json's dict) from the stats of its parts (dicts with the fields of
  LabelCounts.as_dict plus corrupt_skipped, too_large_skipped and seconds)."""
  num_classes = model_config.model.num_classes
  class_counts = np.sum([p['class_counts'] for p in parts], axis=0).astype(np.int64)
  hist = np.sum([p['confidence_histogram'] for p in parts], axis=0).astype(np.int64)
  compared = sum(p['compared_with_source_labels'] for p in parts)
  agree = sum(p['agree_with_source_labels'] for p in parts)
  return {
      'count': int(sum(p['count'] for p in parts)),
      'num_classes': num_classes, 'class_names': model_config.class_names,
      'class_counts': class_counts.tolist(),
      'confidence_histogram': {'bin_edges': shards.bin_edges(), 'counts': hist.tolist()},
      'mean_confidence': float((hist * (np.arange(len(hist)) + 0.5) / len(hist)).sum() /
                               max(hist.sum(), 1)),
      'corrupt_skipped': int(sum(p['corrupt_skipped'] for p in parts)),
      'too_large_skipped': int(sum(p.get('too_large_skipped', 0) for p in parts)),
      'max_image_pixels': config.max_image_pixels,
      'accuracy_against_source_labels': (agree / compared) if compared else None,
      'teacher': teacher_name, 'resolution': resolution, 'shard_seconds': round(
          sum(p['seconds'] for p in parts), 3),
      'shards': [shards.shard_name(OUTPUT_PREFIX, i, config.num_shards)
                 for i in range(config.num_shards)],
      **config.fixed(),
  }


def write_summary(output_dir, stats):
  """Writes OUTPUT_DIR/plot.png, then OUTPUT_DIR/stats.json (the completion marker) from `stats`."""
  from noisy_student_tf.selftrain import plots  # pylint: disable=g-import-not-at-top
  plots.label_plot(stats, os.path.join(output_dir, PLOT_FILE))
  shards.write_json(os.path.join(output_dir, shards.STATS_FILE), stats)


def _images_to_label(config, source, todo):
  """The number of images of the shards in `todo` (the progress total), None when unknown here
  (one shard_index: _label_shard sets it from the shard)."""
  if config.shard_index is not None or source.num_examples is None:
    return None
  done = [shards.read_json(_shard_stats_path(config.output_dir, i, config.num_shards))
          for i in range(config.num_shards) if i not in todo]
  return source.num_examples - sum(
      p['count'] + p['corrupt_skipped'] + p.get('too_large_skipped', 0) for p in done)


def prepare(config):
  """The checks and set-up before labeling into config.output_dir, by any runner: the teacher
  exists and is trained, the output_dir holds nothing made with other settings, the source is
  not empty; writes OUTPUT_DIR/label_config.json.  Returns (the teacher's ModelDirConfig, the
  Source, whether to compare with the source's labels).  Raises ValueError naming what is wrong.
  """
  try:
    model_config = model_dir_lib.read_config(config.model_dir)
  except FileNotFoundError as e:
    raise ValueError(f'teacher model_dir: {e}') from e
  if not os.path.exists(model_dir_lib.weights_path(config.model_dir, config.weights)):
    raise ValueError(f'teacher {config.model_dir!r} has no final {config.weights} weights '
                     '(training has not finished)')
  _check_output_dir(config)
  source = _open_checked(config, model_config.model.num_classes)
  compare = source.num_classes == model_config.model.num_classes
  os.makedirs(config.output_dir, exist_ok=True)
  shards.write_json(os.path.join(config.output_dir, RUN_FILE), config.fixed())
  return model_config, source, compare


def resolution_of(config, model_config):
  """The test resolution labeling runs at: config.resolution, else the teacher's."""
  return int(config.resolution or model_config.model.resolution)


def teacher_name_of(config, model_config):
  """What every record's pseudo/teacher says: 'model name:absolute model dir:weights'."""
  return f'{model_config.model.name}:{os.path.abspath(config.model_dir)}:{config.weights}'


def label(config: LabelConfig) -> dict:
  """Labels the unlabeled source with the teacher, as `config` says (config.progress: images per
  second over the shards to label; config.runner='beam': as an Apache Beam pipeline, see
  selftrain/beam/labeling.py).

  Returns the aggregate stats (also OUTPUT_DIR/stats.json) when every shard is done, else
  {'complete': False, 'shards_done': n, 'num_shards': N}.  Raises ValueError for bad settings, a
  missing teacher, an empty source or an output_dir made with other settings, before labeling.
  """
  config.validate()
  if config.runner == 'beam':
    from noisy_student_tf.selftrain.beam import labeling  # pylint: disable=g-import-not-at-top
    return labeling.label(config)
  progress = config.progress
  model_config, source, compare = prepare(config)
  todo = range(config.num_shards) if config.shard_index is None else [config.shard_index]
  todo = [i for i in todo if not shard_done(config.output_dir, i, config.num_shards)]
  resolution = resolution_of(config, model_config)
  teacher_name = teacher_name_of(config, model_config)
  if todo:
    from noisy_student_tf.evaluate import evaluator  # pylint: disable=g-import-not-at-top
    model, _ = model_dir_lib.load_model(config.model_dir, weights=config.weights,
                                        resolution=resolution)
    predict_fn = evaluator.make_predict_fn(model)
    with progress_lib.Progress('ns-label', _images_to_label(config, source, todo), 'images',
                               progress) as bar:
      for i in todo:
        _label_shard(config, i, model_config, predict_fn, teacher_name, resolution, compare, bar)
  done = sum(shard_done(config.output_dir, i, config.num_shards) for i in range(config.num_shards))
  if done < config.num_shards:
    logging.info('ns-label: %d of %d shards done; stats.json comes with the last one', done,
                 config.num_shards)
    return {'complete': False, 'shards_done': done, 'num_shards': config.num_shards}
  stats = _aggregate(config, model_config, teacher_name, resolution)
  stats['complete'] = True
  logging.info('ns-label: %d images labeled into %d shards (%d corrupt, %d too large skipped)',
               stats['count'], config.num_shards, stats['corrupt_skipped'],
               stats['too_large_skipped'])
  return stats
