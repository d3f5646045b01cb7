"""The order images are read in: shuffled streams for training, representative subsets.

Sources list their elements in source order, which is class order for a `folder:` tree, for
records written class by class, and for pseudo-labels of such a source.  A 10,000-element
shuffle buffer over a 50,000-image class-ordered folder trains 3 classes per batch, so training
reads through `shuffled_stream`:

  files (folder:, images:, digits:)   every epoch a full-size permutation of the file list;
  records (tfrecord:, pseudo:)         every epoch a permutation of record chunks (whole files, or
                                       ranges of at most `chunk` records when the counts are known
                                       and files are few), read by up to `cycle_length` parallel
                                       interleaved readers;
  anything else (tfds:)                the element buffer only (tfds shuffles when it prepares).

then an element buffer.  Permutations are stateless, keyed by (seed, epoch): every worker of a
multi-worker run, and a resumed run, draws the same order; and they apply within a shard
(`open_source(num_shards, shard_index)`), so shards stay disjoint.

`sample_source(source, n, seed)` replaces "the first n" everywhere: a seeded sample stratified by
class where labels are known, uniform otherwise, in source order, the same for every model.
"""

import math

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import sources as sources_lib

CYCLE_LENGTH = 256
TARGET_CHUNKS = 256
MIN_CHUNK = 8
_AUTOTUNE = tf.data.AUTOTUNE


def _seed_pair(seed, epoch):
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def _permutation(n, seed, epoch):
  return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                  seed=_seed_pair(seed, epoch))


def _file_epochs(files: sources_lib.FileList, seed, read_files=True):
  labels = tf.constant(files.labels, tf.int64)
  ids = tf.constant(list(files.ids) or [''], tf.string)
  n = len(files.ids)
  if files.encoded is not None:
    encoded = tf.constant(list(files.encoded), tf.string)
    make = lambda i: sources_lib.element(encoded[i], labels[i], ids[i])
  elif read_files:
    paths = tf.constant(list(files.paths), tf.string)
    make = lambda i: sources_lib.element(tf.io.read_file(paths[i]), labels[i], ids[i])
  else:
    paths = tf.constant(list(files.paths), tf.string)
    make = lambda i: {**sources_lib.element(tf.constant(b''), labels[i], ids[i]),
                      'path': paths[i]}

  def epoch(e):
    return tf.data.Dataset.from_tensor_slices(_permutation(n, seed, e)).map(
        make, num_parallel_calls=_AUTOTUNE, deterministic=True)
  return epoch


def record_chunks(counts, target_chunks=TARGET_CHUNKS, min_chunk=MIN_CHUNK):
  """Splits files of known record counts into contiguous chunks.

  counts: records per file (when they are unknown, each file is one chunk).  Files are split
  into ranges of about max(min_chunk, total / target_chunks) records, so that a few large
  class-ordered files still give many independent read positions, while ImageNet's 1024 shards
  of ~1250 records stay whole.  Returns (file index, start, count) int64 arrays; count -1 = to
  the end of the file.
  """
  total = int(sum(counts))
  size = max(int(min_chunk), int(math.ceil(total / max(1, int(target_chunks)))))
  file_index, start, length = [], [], []
  for f, c in enumerate(counts):
    for s in range(0, int(c), size):
      file_index.append(f)
      start.append(s)
      length.append(min(size, int(c) - s))
  return (np.asarray(file_index, np.int64), np.asarray(start, np.int64),
          np.asarray(length, np.int64))


def _record_epochs(plan: sources_lib.RecordPlan, seed, cycle_length):
  if plan.counts is None:
    chunk_file = np.arange(len(plan.files), dtype=np.int64)
    chunk_start = np.zeros(len(plan.files), np.int64)
    chunk_len = np.full(len(plan.files), -1, np.int64)
  else:
    chunk_file, chunk_start, chunk_len = record_chunks(plan.counts)
  files = tf.constant(list(plan.files), tf.string)
  chunk_file, chunk_start, chunk_len = (tf.constant(a) for a in (chunk_file, chunk_start,
                                                                 chunk_len))
  n = int(chunk_file.shape[0])

  def records(f, start, length):
    stop = tf.where(length < 0, tf.int64.max, start + length)
    # zip, not map: a function call per record in each of hundreds of readers costs ~2x.
    return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(f).repeat(),
                                tf.data.Dataset.range(start, stop),
                                tf.data.TFRecordDataset(f).skip(start).take(length)))

  def read_chunk(c, rotation):
    # A chunk is read from a random record to its end, then from its start: all readers advance
    # in step, and without the rotation every round would read the same offset of every chunk,
    # which aliases with any periodic order in the files (ns-filter deals records round-robin).
    f, start, length = files[chunk_file[c]], chunk_start[c], chunk_len[c]
    r = rotation[c]
    return records(f, start + r, tf.where(length < 0, length, length - r)).concatenate(
        records(f, start, r))

  def epoch(e):
    rotation = tf.where(chunk_len > 0, tf.cast(tf.floor(tf.random.stateless_uniform(
        [n], seed=_seed_pair(seed + 1, e)) * tf.cast(chunk_len, tf.float32)), tf.int64), 0)
    rotation = tf.minimum(rotation, tf.maximum(chunk_len - 1, 0))
    # One record from each open chunk in turn: with every chunk open (up to cycle_length), each
    # round samples the whole source in proportion; fewer readers than chunks would make a window
    # of a few thousand records come from a few dozen single-class chunks.
    ds = tf.data.Dataset.from_tensor_slices(_permutation(n, seed, e)).interleave(
        lambda c: read_chunk(c, rotation), cycle_length=max(1, min(n, int(cycle_length))),
        block_length=1, num_parallel_calls=_AUTOTUNE, deterministic=True)
    if plan.shard[0] > 1:
      ds = ds.shard(*plan.shard)
    return ds.map(plan.parse, num_parallel_calls=_AUTOTUNE, deterministic=True)
  return epoch


def shuffled_stream(source, seed=None, shuffle_buffer=10000, cycle_length=CYCLE_LENGTH,
                    read_files=True):
  """An endless stream of the source's elements, reshuffled every epoch (see the module doc).

  source: a sources.Source.  seed: int (None: a random one).  shuffle_buffer: elements of the
  final buffer.  cycle_length: parallel record readers.  read_files=False: elements of a source of
  files on disk carry the file's 'path' and an empty 'encoded' (read it later, for the elements
  kept), in the same order.  Returns a tf.data.Dataset of element dicts (as Source.dataset
  yields), deterministic for a given seed.
  """
  if seed is None:
    seed = int(np.random.randint(0, 2 ** 31 - 1))
  seed = int(seed)
  if source.files is not None:
    epoch = _file_epochs(source.files, seed, read_files)
  elif source.records is not None:
    epoch = _record_epochs(source.records, seed, cycle_length)
  else:
    return source.dataset.shuffle(int(shuffle_buffer), seed=seed,
                                  reshuffle_each_iteration=True).repeat()
  ds = tf.data.Dataset.counter().flat_map(epoch)
  return ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)


def source_labels(source):
  """The labels (int64 numpy [N], -1 where unlabeled) of every element, in source order.

  Free for file sources; other sources are read once (labels only, images are not decoded).
  """
  if source.files is not None:
    return np.asarray(source.files.labels, np.int64)
  labels = source.dataset.map(lambda d: d['label'], num_parallel_calls=_AUTOTUNE,
                              deterministic=True)
  return np.fromiter(labels.as_numpy_iterator(), np.int64)


def stratified_indices(labels, n, seed):
  """Sorted indices of a seeded sample of n of len(labels) elements.

  Stratified by class when labels are known (each class gets its share of n by largest
  remainder, drawn at random within the class); uniform when every label is -1.  Returns
  int64 numpy [min(n, len(labels))].
  """
  labels = np.asarray(labels, np.int64)
  n = int(n)
  if n < 1:
    raise ValueError(f'sample size must be >= 1, got {n}')
  if n >= labels.size:
    return np.arange(labels.size, dtype=np.int64)
  rng = np.random.default_rng(int(seed))
  if (labels < 0).all():
    return np.sort(rng.choice(labels.size, n, replace=False)).astype(np.int64)
  classes, counts = np.unique(labels, return_counts=True)
  share = counts * (n / labels.size)
  take = np.floor(share).astype(np.int64)
  remainder = n - int(take.sum())
  if remainder:
    # Largest remainder first; ties broken at random so no class is favoured by its number.
    order = np.lexsort((rng.random(classes.size), -(share - take)))
    take[order[:remainder]] += 1
  chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False)
            for c, k in zip(classes, take) if k]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def sample_source(source, n, seed=0):
  """A representative subset of n elements of `source` (all of it when n >= its size).

  Stratified by class where labels are known, uniform otherwise, seeded, in source order: the
  same images for a model and its baseline.  Returns a Source whose spec records the sample.
  """
  labels = source_labels(source)
  indices = stratified_indices(labels, n, seed)
  if indices.size == labels.size:
    return source
  return sources_lib.subset(source, indices,
                            f'{source.spec}[sample of {indices.size}, seed {seed}]')
