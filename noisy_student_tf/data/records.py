"""Pseudo-label records: one tf.train.Example per unlabeled image, in sharded TFRecord files
`<prefix>-<shard:05d>-of-<num_shards:05d>.tfrecord`, each written under a temporary name and
renamed when closed whole.

Features:
  image/encoded        bytes   the original encoded image (never re-encoded)
  image/source_id      bytes   stable unique id from the source (relative path, record key, ...)
  pseudo/probabilities floats  the teacher's distribution after temperature: all C classes, or
                               the top k (then with pseudo/indices)
  pseudo/indices       int64s  class indices of the top-k probabilities (top-k records only)
  pseudo/num_classes   int64   C (lets a reader rebuild dense vectors from top-k)
  pseudo/label         int64   argmax class
  pseudo/confidence    float   probability of the argmax class
  pseudo/teacher       bytes   model name and checkpoint that labeled the image
  pseudo/generation    int64   self-training generation of the teacher
At ImageNet scale (130M images x 1000 classes) full vectors cost ~0.5 TB; top-k (e.g. k=10)
costs ~1%.  The reader renormalises top-k vectors to sum to 1.
"""

import json
import os
import re

import numpy as np
import tensorflow as tf


def shard_filename(prefix, shard_index, num_shards):
  """'<prefix>-<shard:05d>-of-<num_shards:05d>.tfrecord'."""
  return f'{prefix}-{int(shard_index):05d}-of-{int(num_shards):05d}.tfrecord'


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _as_bytes(x):
  if isinstance(x, bytes):
    return x
  if isinstance(x, str):
    return x.encode('utf-8')
  if hasattr(x, 'numpy'):
    x = x.numpy()
  if isinstance(x, np.ndarray):
    x = x.item()
  return x if isinstance(x, bytes) else str(x).encode('utf-8')


def make_example(encoded, source_id, probabilities, *, top_k=None, teacher='', generation=0):
  """Builds the tf.train.Example of one pseudo-labeled image.

  probabilities: float [C] (the teacher's distribution).  top_k: keep only the k largest (with
  their indices); None keeps all C.  Returns a tf.train.Example.
  """
  probs = np.asarray(probabilities, np.float32).reshape(-1)
  num_classes = probs.size
  label = int(np.argmax(probs))
  feature = {
      'image/encoded': _bytes([_as_bytes(encoded)]),
      'image/source_id': _bytes([_as_bytes(source_id)]),
      'pseudo/num_classes': _ints([num_classes]),
      'pseudo/label': _ints([label]),
      'pseudo/confidence': _floats([float(probs[label])]),
      'pseudo/teacher': _bytes([_as_bytes(teacher)]),
      'pseudo/generation': _ints([int(generation)]),
  }
  if top_k is not None and int(top_k) < num_classes:
    k = int(top_k)
    if k < 1:
      raise ValueError(f'top_k must be >= 1 or None, got {top_k!r}')
    idx = np.argsort(-probs, kind='stable')[:k]
    feature['pseudo/indices'] = _ints(idx.tolist())
    feature['pseudo/probabilities'] = _floats(probs[idx].tolist())
  else:
    feature['pseudo/probabilities'] = _floats(probs.tolist())
  return tf.train.Example(features=tf.train.Features(feature=feature))


class PseudoLabelWriter:
  """Writes one shard of pseudo-label records, atomically.

  `PseudoLabelWriter(output_dir, prefix='pseudo', shard_index=0, num_shards=1, top_k=None,
  teacher='', generation=0)`; `write(encoded, source_id, probabilities)` per image or
  `write_batch(encoded[B], source_ids[B], probabilities[B, C])`; `close()` renames the temporary
  file to `path`.  As a context manager it closes on success and deletes the temporary file on
  an exception.  `count` is the number of records written.
  """

  def __init__(self, output_dir, prefix='pseudo', shard_index=0, num_shards=1, top_k=None,
               teacher='', generation=0):
    if not 0 <= int(shard_index) < int(num_shards):
      raise ValueError(f'need 0 <= shard_index < num_shards, got {shard_index}, {num_shards}')
    if top_k is not None and int(top_k) < 1:
      raise ValueError(f'top_k must be >= 1 or None, got {top_k!r}')
    os.makedirs(output_dir, exist_ok=True)
    self.path = os.path.join(output_dir, shard_filename(prefix, shard_index, num_shards))
    self._tmp = os.path.join(output_dir, '.tmp-' + os.path.basename(self.path))
    self._writer = tf.io.TFRecordWriter(self._tmp)
    self.top_k = top_k
    self.teacher = teacher
    self.generation = int(generation)
    self.count = 0

  def write(self, encoded, source_id, probabilities):
    """Writes one record (encoded image bytes, source id, probability vector [C])."""
    ex = make_example(encoded, source_id, probabilities, top_k=self.top_k, teacher=self.teacher,
                      generation=self.generation)
    self._writer.write(ex.SerializeToString())
    self.count += 1

  def write_batch(self, encoded, source_ids, probabilities):
    """Writes B records from arrays/tensors of B encoded images, B ids and [B, C] probabilities."""
    if hasattr(encoded, 'numpy'):
      encoded = encoded.numpy()
    if hasattr(source_ids, 'numpy'):
      source_ids = source_ids.numpy()
    probabilities = np.asarray(probabilities, np.float32)
    if not len(encoded) == len(source_ids) == len(probabilities):
      raise ValueError(f'batch sizes differ: {len(encoded)} images, {len(source_ids)} ids, '
                       f'{len(probabilities)} probability rows')
    for e, s, p in zip(encoded, source_ids, probabilities):
      self.write(e, s, p)

  def close(self):
    """Flushes and renames the temporary file to self.path; returns self.path."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      os.replace(self._tmp, self.path)
    return self.path

  def abort(self):
    """Closes and deletes the temporary file (nothing is left under the final name)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      if os.path.exists(self._tmp):
        os.remove(self._tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


_FEATURES = {
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    'image/source_id': tf.io.FixedLenFeature([], tf.string, default_value=''),
    'pseudo/probabilities': tf.io.VarLenFeature(tf.float32),
    'pseudo/indices': tf.io.VarLenFeature(tf.int64),
    'pseudo/num_classes': tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    'pseudo/label': tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    'pseudo/confidence': tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    'pseudo/teacher': tf.io.FixedLenFeature([], tf.string, default_value=''),
    'pseudo/generation': tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def parse_pseudo_example(serialized, num_classes, renormalize=True):
  """Parses one serialized pseudo-label record (a tf.string scalar; graph-safe).

  num_classes: C (see `peek_num_classes`).  Top-k records are scattered into a dense vector and,
  with renormalize, divided by their sum.  Returns a dict: 'encoded', 'source_id', 'label'
  (int64 argmax), 'target' (float32 [C]), 'confidence' (float32), 'teacher', 'generation'.
  """
  ex = tf.io.parse_single_example(serialized, _FEATURES)
  values = tf.sparse.to_dense(ex['pseudo/probabilities'])
  indices = tf.sparse.to_dense(ex['pseudo/indices'])

  def from_top_k():
    dense = tf.scatter_nd(indices[:, None], values, [num_classes])
    if renormalize:
      dense = dense / tf.maximum(tf.reduce_sum(dense), 1e-12)
    return dense

  target = tf.cond(tf.size(indices) > 0, from_top_k,
                   lambda: tf.reshape(values, [num_classes]))
  target = tf.ensure_shape(target, [num_classes])
  return {'encoded': ex['image/encoded'], 'source_id': ex['image/source_id'],
          'label': ex['pseudo/label'], 'target': target, 'confidence': ex['pseudo/confidence'],
          'teacher': ex['pseudo/teacher'], 'generation': ex['pseudo/generation']}


def peek_num_classes(path):
  """Number of classes C stored in the first record of the TFRecord file `path`.

  Raises ValueError when the file is empty or is not a pseudo-label record file.
  """
  for record in tf.data.TFRecordDataset(path).take(1):
    ex = tf.train.Example.FromString(record.numpy())
    feats = ex.features.feature
    if 'pseudo/num_classes' in feats:
      return int(feats['pseudo/num_classes'].int64_list.value[0])
    if 'pseudo/probabilities' in feats and 'pseudo/indices' not in feats:
      return len(feats['pseudo/probabilities'].float_list.value)
    raise ValueError(f'{path} is not a pseudo-label record file (no pseudo/num_classes)')
  raise ValueError(f'{path} holds no records; cannot tell the number of classes')


_SHARD_NAME = re.compile(r'^.+-(\d{5})-of-(\d{5})\.tfrecord$')


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def known_record_counts(files):
  """Record counts of pseudo-label files as their writers recorded them, without reading records.

  ns-label writes `shard_stats/<shard>.json` with 'count' for each shard; ns-filter writes one
  `stats.json` with 'shard_sizes' for its `num_shards` shards.  Returns a tuple of ints (one per file) or None
  when any file's count is not recorded.
  """
  counts = []
  for path in files:
    folder, name = os.path.split(os.path.splitext(path)[0])
    side = (_read_json(os.path.join(folder, 'shard_stats', name + '.json')) or
            _read_json(os.path.join(folder, name + '.json')))
    if side and isinstance(side.get('count'), int):
      counts.append(side['count'])
      continue
    m = _SHARD_NAME.match(os.path.basename(path))
    stats = _read_json(os.path.join(os.path.dirname(path), 'stats.json')) if m else None
    sizes = (stats or {}).get('shard_sizes')
    if not (m and sizes and stats.get('num_shards') == int(m.group(2)) == len(sizes)):
      return None
    counts.append(int(sizes[int(m.group(1))]))
  return tuple(counts)
