"""Image sources, chosen by one spec string: every image the system sees starts here.

Specs (`open_source(spec)`):
  tfds:NAME[:SPLIT]   a tensorflow-datasets dataset (default split 'train'), read from `data_dir`
  folder:PATH         PATH/<class>/<image>; classes are the sub-folders in sorted order
  tfrecord:GLOB       ImageNet-style tf.train.Example shards (image/encoded, image/class/label);
                      stored labels minus `label_offset` (1 for 1-based ImageNet records)
  images:GLOB         plain image files, unlabeled ('**' matches folders recursively)
  digits[:SPLIT]      scikit-learn's bundled 8x8 handwritten digits as PNGs; SPLIT is train
                      (default, 1437 images), test (360: every 5th image) or all (1797)
  pseudo:GLOB         pseudo-label records written by ns-label / ns-filter (see records.py)

A `Source.dataset` yields dicts of scalars: 'encoded' (the original encoded image bytes),
'label' (int64, -1 when unlabeled), 'source_id' (a stable unique string: relative path, record
key...), and for pseudo sources 'target' (float32 [C] probabilities) and 'confidence'.  Images are
not decoded here (see preprocessing.py), so records can carry the original bytes unchanged.
The order is deterministic; sharding (`num_shards`, `shard_index`) splits a source exactly: the
union of all shards is the source and no element appears in two shards.

Training order.  `Source.dataset` is in source order, which for `folder:` and many record files is
class order.  Training reads a source through `shuffled_stream(source, seed)` instead: every
epoch is a full-size, seeded permutation of the file list (folder:, images:, digits:) or of
record-file chunks read interleaved (tfrecord:, pseudo:), keyed by (seed, epoch) so that every
worker of a multi-worker run draws the same order; an element buffer shuffles on top.
"""

import dataclasses
import glob as glob_lib
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import preprocessing

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
KINDS = ('tfds', 'folder', 'tfrecord', 'images', 'digits', 'pseudo')
DIGITS_SPLITS = ('train', 'test', 'all')


@dataclasses.dataclass(frozen=True)
class Source:
  """A readable image source: the dataset of dicts plus what is known about it.

  num_classes / class_names are None when the source does not say (images:, tfrecord: without
  class names); num_examples is None when unknown without reading everything (tfrecord:).
  """
  dataset: tf.data.Dataset
  num_classes: Optional[int]
  class_names: Optional[Sequence[str]]
  num_examples: Optional[int]
  spec: str
  labeled: bool = True
  # What shuffled_stream and sample_source read instead of `dataset`, when the source has it:
  files: Optional['FileList'] = None
  records: Optional['RecordPlan'] = None


@dataclasses.dataclass(frozen=True)
class FileList:
  """A source made of one file per element: paths, labels (int64, -1 unlabeled) and ids."""
  paths: Tuple[str, ...]
  labels: np.ndarray
  ids: Tuple[str, ...]
  encoded: Optional[Tuple[bytes, ...]] = None  # in-memory bytes instead of paths (digits:)


@dataclasses.dataclass(frozen=True)
class RecordPlan:
  """A source made of TFRecord files: the files, their record counts when known, and the parser.

  parse: (file path, index in file, serialized record) -> element dict.  shard: (num_shards,
  shard_index) applied to the records when there are fewer files than shards (1, 0 otherwise).
  """
  files: Tuple[str, ...]
  counts: Optional[Tuple[int, ...]]
  parse: Callable
  shard: Tuple[int, int] = (1, 0)


def parse_spec(spec):
  """Splits a source spec into (kind, argument); raises ValueError on an unknown kind."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f'source spec must be a non-empty string like "folder:PATH", got {spec!r}')
  kind, _, arg = spec.partition(':')
  if kind not in KINDS:
    raise ValueError(f'unknown source kind {kind!r} in spec {spec!r}; expected one of '
                     + ', '.join(f'{k}:' for k in KINDS))
  if kind not in ('digits',) and not arg:
    raise ValueError(f'source spec {spec!r} lacks its argument after "{kind}:"')
  return kind, arg


def open_source(spec, *, data_dir=None, label_offset=0, num_shards=1, shard_index=0) -> Source:
  """Opens the source named by `spec` (see the module docstring for the syntax).

  data_dir: tensorflow-datasets data dir (tfds: only).  label_offset: subtracted from stored
  labels of tfrecord: sources (1 for 1-based ImageNet records).  num_shards / shard_index: read
  only this worker's share.  Returns a Source.  Raises ValueError naming a bad spec or argument,
  FileNotFoundError when nothing matches a path or glob.
  """
  kind, arg = parse_spec(spec)
  num_shards, shard_index = int(num_shards), int(shard_index)
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f'need num_shards >= 1 and 0 <= shard_index < num_shards, got '
                     f'num_shards={num_shards}, shard_index={shard_index}')
  opener = {'tfds': _open_tfds, 'folder': _open_folder, 'tfrecord': _open_tfrecord,
            'images': _open_images, 'digits': _open_digits, 'pseudo': _open_pseudo}[kind]
  return opener(spec, arg, data_dir=data_dir, label_offset=int(label_offset),
                num_shards=num_shards, shard_index=shard_index)


def _shard_list(items, num_shards, shard_index):
  return items[shard_index::num_shards]


def element(encoded, label, source_id):
  """The element dict every source yields (see the module docstring)."""
  return {'encoded': encoded, 'label': tf.cast(label, tf.int64), 'source_id': source_id}


def _file_rows(paths, labels, ids):
  """Dataset of (path, label, id) tuples, in the given order."""
  return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int64), list(ids)))


def files_dataset(paths, labels, ids):
  """Dataset of element dicts reading each file's bytes lazily, in the given order."""
  ds = _file_rows(paths, labels, ids)
  return ds.map(lambda p, l, i: element(tf.io.read_file(p), l, i),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def file_list_dataset(files: FileList):
  """Dataset of element dicts of a FileList in its order: file bytes read lazily, or the
  in-memory bytes when it has them."""
  if files.encoded is not None:
    return tf.data.Dataset.from_tensor_slices(
        (list(files.encoded), files.labels, list(files.ids))).map(element)
  ds = files_dataset(files.paths, files.labels, files.ids)
  ds.ns_file_list = files  # read_chunks may read these files a chunk at a time instead
  return ds


def _read_local(path):
  """The bytes of the local file `path` (bytes): os.open / os.read, about half the CPU of
  open().read() for a 1 KB JPEG."""
  fd = os.open(path, os.O_RDONLY)
  try:
    parts = []
    while True:
      part = os.read(fd, 1 << 16)
      if not part:
        return b''.join(parts)  # a single part is returned as it is, not copied
      parts.append(part)
  finally:
    os.close(fd)


def _read_files(paths):
  """(bytes string [n], header pixels int64 [n], failed bool [n]) of the files named by `paths`
  (a string tensor [n]): local files read with os.read (a few µs each), others (gs://...) with
  tf.io.gfile; each file's preprocessing.header_pixels_of_bytes.  A file that cannot be read
  gives b'' and failed, for read_chunks to read again with TF's own error."""
  encoded, pixels, failed = [], [], []
  for path in paths.numpy():
    try:
      if b'://' in path:
        with tf.io.gfile.GFile(path.decode('utf-8', 'surrogateescape'), 'rb') as f:
          data = f.read()
      else:
        data = _read_local(path)
    except (OSError, tf.errors.OpError):
      data = None
    encoded.append(data or b'')
    pixels.append(preprocessing.PIXELS_NOT_READ if data is None
                  else preprocessing.header_pixels_of_bytes(data))
    failed.append(data is None)
  n = len(encoded)
  return (tf.constant(encoded, tf.string, [n]), tf.constant(pixels, tf.int64, [n]),
          tf.constant(failed, tf.bool, [n]))


def read_chunks(source, chunk_size) -> tf.data.Dataset:
  """Dataset of dicts of [<= chunk_size] tensors ('encoded', 'label', 'source_id') over `source`
  in its order: source.dataset.batch(chunk_size), the same elements.  Where source.dataset is
  the unchanged file list of a folder:/images: source, each chunk's files are read in one Python
  call instead of one tf.io.read_file per element, which also reads their headers: the dicts
  then have 'header_pixels' too (int64, preprocessing.header_pixels_of_bytes).  At 32 px that is
  about 25 CPU-µs less per image, a quarter of the evaluation pipeline: tf.data's per-element
  work and libjpeg's header read cost more than reading a 1 KB JPEG."""
  files = getattr(source.dataset, 'ns_file_list', None)
  if files is None:
    return source.dataset.batch(chunk_size)

  def read(paths, labels, ids):
    encoded, pixels, failed = tf.py_function(_read_files, [paths],
                                             [tf.string, tf.int64, tf.bool])
    for t in (encoded, pixels, failed):
      t.set_shape(paths.shape)

    def read_again():  # raises tf.io.read_file's own error (NotFoundError, ...) for the file
      return (tf.map_fn(tf.io.read_file, paths, fn_output_signature=tf.string),
              tf.fill(tf.shape(pixels), tf.constant(preprocessing.PIXELS_NOT_READ, tf.int64)))

    encoded, pixels = tf.cond(tf.reduce_any(failed), read_again, lambda: (encoded, pixels))
    return {**element(encoded, labels, ids), 'header_pixels': pixels}

  return _file_rows(files.paths, files.labels, files.ids).batch(chunk_size).map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _is_image(name):
  return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith('.')


def list_folder(folder):
  """Lists FOLDER/<class>/<image>: the numbering of every `folder:` source and of
  tools/make_tfrecords.py.

  Returns (class_names, items): the class sub-folder names in sorted order, and a list of
  (path, relative path, class index) for every image, class by class, files in sorted order.
  Raises FileNotFoundError when FOLDER is not a directory, has no class sub-folders or no images.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder!r} is not a directory (expected FOLDER/<class>/<image>)')
  classes = sorted(d for d in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, d)) and not d.startswith('.'))
  if not classes:
    raise FileNotFoundError(f'no class sub-folders in {folder!r} (expected FOLDER/<class>/<image>)')
  items = []
  for label, cls in enumerate(classes):
    for root, dirs, files in os.walk(os.path.join(folder, cls), followlinks=True):
      dirs.sort()
      rel_root = os.path.relpath(root, folder)  # once per folder: relpath is slow per file
      for f in sorted(files):
        if _is_image(f):
          items.append((os.path.join(root, f), os.path.join(rel_root, f), label))
  if not items:
    raise FileNotFoundError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) under the class '
                            f'sub-folders of {folder!r}')
  return classes, items


def _open_folder(spec, path, *, num_shards, shard_index, **_):
  try:
    classes, listed = list_folder(path)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'folder source {spec!r}: {e}') from None
  listed = _shard_list(listed, num_shards, shard_index)
  paths, ids, labels = zip(*listed) if listed else ((), (), ())
  files = FileList(tuple(paths), np.asarray(labels, np.int64), tuple(ids))
  return Source(file_list_dataset(files), len(classes), tuple(classes), len(listed), spec,
                files=files)


def _glob(spec, pattern):
  files = sorted(f for f in glob_lib.glob(pattern, recursive=True) if os.path.isfile(f))
  if not files:
    raise FileNotFoundError(f'source {spec!r}: no files match {pattern!r}')
  return files


def _open_images(spec, pattern, *, num_shards, shard_index, **_):
  files = [f for f in _glob(spec, pattern) if _is_image(f)]
  if not files:
    raise FileNotFoundError(f'images source {spec!r}: no image files ({", ".join(IMAGE_EXTENSIONS)}) '
                            f'match {pattern!r}')
  files = _shard_list(files, num_shards, shard_index)
  plan = FileList(tuple(files), np.full(len(files), -1, np.int64), tuple(files))
  return Source(file_list_dataset(plan), None, None, len(files), spec, labeled=False, files=plan)


def _record_shards(files, num_shards, shard_index):
  """(this shard's files, record-level shard): by file when there are at least as many files as
  shards, by record otherwise."""
  if len(files) >= num_shards:
    return tuple(_shard_list(list(files), num_shards, shard_index)), (1, 0)
  return tuple(files), (num_shards, shard_index)


def _record_dataset(plan):
  """The records of a RecordPlan in file order: (file, index-in-file, serialized) triples."""
  ds = tf.data.Dataset.from_tensor_slices(list(plan.files)).flat_map(
      lambda f: tf.data.TFRecordDataset(f).enumerate().map(lambda i, r: (f, i, r)))
  if plan.shard[0] > 1:
    ds = ds.shard(*plan.shard)
  return ds


def _records_source(spec, plan, num_classes, num_examples, labeled=True):
  ds = _record_dataset(plan).map(plan.parse, num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=True)
  return Source(ds, num_classes, None, num_examples, spec, labeled=labeled, records=plan)


TFRECORD_LABEL_KEY = 'image/class/label'


def _tfrecord_parser(label_offset):
  features = {
      'image/encoded': tf.io.FixedLenFeature([], tf.string),
      TFRECORD_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=label_offset - 1),
      'image/source_id': tf.io.FixedLenFeature([], tf.string, default_value=''),
      'image/filename': tf.io.FixedLenFeature([], tf.string, default_value=''),
  }

  @tf.autograph.experimental.do_not_convert
  def parse(f, i, record):
    ex = tf.io.parse_single_example(record, features)
    key = tf.strings.join([tf.strings.split(f, '/')[-1], tf.strings.as_string(i)], ':')
    sid = tf.where(ex['image/source_id'] != '', ex['image/source_id'],
                   tf.where(ex['image/filename'] != '', ex['image/filename'], key))
    return element(ex['image/encoded'], ex[TFRECORD_LABEL_KEY] - label_offset, sid)
  return parse


def _open_tfrecord(spec, pattern, *, label_offset, num_shards, shard_index, **_):
  files, shard = _record_shards(_glob(spec, pattern), num_shards, shard_index)
  plan = RecordPlan(files, None, _tfrecord_parser(label_offset), shard)
  return _records_source(spec, plan, None, None)


def _open_pseudo(spec, pattern, *, num_shards, shard_index, **_):
  from noisy_student_tf.data import records  # records imports sources' helpers lazily
  all_files = _glob(spec, pattern)
  num_classes = records.peek_num_classes(all_files[0])
  files, shard = _record_shards(all_files, num_shards, shard_index)
  plan = RecordPlan(files, records.known_record_counts(files),
                    lambda f, i, r: records.parse_pseudo_example(r, num_classes), shard)
  num_examples = sum(plan.counts) if plan.counts is not None and shard[0] == 1 else None
  return _records_source(spec, plan, num_classes, num_examples)


_DIGITS_CACHE = {}


def _digits_pngs():
  """(PNG bytes list, labels) of all 1797 sklearn digits, 0-16 ink scaled to 0-255 grayscale."""
  if 'all' not in _DIGITS_CACHE:
    from sklearn.datasets import load_digits
    d = load_digits()
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    pngs = [tf.io.encode_png(p).numpy() for p in pixels]
    _DIGITS_CACHE['all'] = (pngs, d.target.astype(np.int64))
  return _DIGITS_CACHE['all']


def _open_digits(spec, split, *, num_shards, shard_index, **_):
  split = split or 'train'
  if split not in DIGITS_SPLITS:
    raise ValueError(f'digits split must be one of {DIGITS_SPLITS}, got {split!r} in {spec!r}')
  pngs, labels = _digits_pngs()
  index = np.arange(len(pngs))
  if split == 'test':
    index = index[index % 5 == 0]
  elif split == 'train':
    index = index[index % 5 != 0]
  index = _shard_list(index, num_shards, shard_index)
  ids = tuple(f'digits:{i}' for i in index)
  plan = FileList(ids, labels[index], ids, encoded=tuple(pngs[i] for i in index))
  return Source(file_list_dataset(plan), 10, tuple(str(i) for i in range(10)), len(index), spec,
                files=plan)


def _open_tfds(spec, arg, *, data_dir, num_shards, shard_index, **_):
  import tensorflow_datasets as tfds
  name, _, split = arg.partition(':')
  split = split or 'train'
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise ValueError(f'tfds source {spec!r}: cannot find dataset {name!r}: {e}') from e
  info = builder.info
  image_key = next((k for k in ('image', 'image/encoded', 'img') if k in info.features), None)
  if image_key is None:
    raise ValueError(f'tfds source {spec!r}: no image feature in {sorted(info.features)}')
  label_feature = info.features['label'] if 'label' in info.features else None
  if split not in info.splits:
    raise ValueError(f'tfds source {spec!r}: split {split!r} not in {sorted(info.splits)}')
  total = info.splits[split].num_examples
  read_split = split
  if num_shards > 1:
    read_split = tfds.even_splits(split, n=num_shards)[shard_index]
  ds = builder.as_dataset(split=read_split, shuffle_files=False,
                          decoders={image_key: tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(add_tfds_id=True))
  num_examples = None
  if total:
    # tfds.even_splits gives the first (total % n) shards one extra example.
    num_examples = total // num_shards + (1 if shard_index < total % num_shards else 0)

  @tf.autograph.experimental.do_not_convert
  def to_element(ex):
    label = ex['label'] if label_feature is not None else tf.constant(-1, tf.int64)
    sid = ex['id'] if 'id' in ex and ex['id'].dtype == tf.string else ex['tfds_id']
    return element(ex[image_key], label, sid)

  ds = ds.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  num_classes = getattr(label_feature, 'num_classes', None)
  names = tuple(label_feature.names) if num_classes else None
  return Source(ds, num_classes, names, num_examples, spec, labeled=label_feature is not None)


def as_unlabeled(source: Source) -> Source:
  """The same images with every label set to -1 (any labeled source can serve as unlabeled)."""
  hide = lambda d: {**d, 'label': tf.constant(-1, tf.int64)}
  files, plan = source.files, source.records
  own_files = files is not None and getattr(source.dataset, 'ns_file_list', None) is files
  if files is not None:
    files = dataclasses.replace(files, labels=np.full(len(files.labels), -1, np.int64))
  if plan is not None:
    parse = plan.parse
    plan = dataclasses.replace(plan, parse=lambda f, i, r: hide(parse(f, i, r)))
  dataset = file_list_dataset(files) if own_files else source.dataset.map(hide)
  return dataclasses.replace(source, dataset=dataset, labeled=False, files=files, records=plan)


def split_per_class(source: Source, n_per_class, seed):
  """Splits a labeled source into n_per_class randomly chosen examples of each class and the rest.

  Deterministic for a given source order and seed.  Returns (labeled Source, rest Source), both
  in source order (and both shuffle as their own files only).  Raises ValueError when a class
  has fewer than n_per_class examples or the source has no labels.
  """
  n_per_class = int(n_per_class)
  if n_per_class < 1:
    raise ValueError(f'n_per_class must be >= 1, got {n_per_class}')
  if source.files is not None:
    labels = np.asarray(source.files.labels, np.int64)
  else:
    labels = np.fromiter(source.dataset.map(lambda d: d['label']).as_numpy_iterator(), np.int64)
  if labels.size == 0 or (labels < 0).all():
    raise ValueError(f'source {source.spec!r} has no labels to split per class')
  rng = np.random.RandomState(int(seed))
  chosen = np.zeros(labels.size, bool)
  for cls in np.unique(labels[labels >= 0]):
    members = np.flatnonzero(labels == cls)
    if members.size < n_per_class:
      raise ValueError(f'source {source.spec!r}: class {cls} has {members.size} examples, fewer '
                       f'than n_per_class={n_per_class}')
    chosen[rng.choice(members, n_per_class, replace=False)] = True
  labeled = subset(source, np.flatnonzero(chosen),
                   f'{source.spec}[{n_per_class}/class,seed={seed}]')
  rest = subset(source, np.flatnonzero(~chosen),
                f'{source.spec}[rest of {n_per_class}/class,seed={seed}]')
  return labeled, rest


def subset(source, indices, spec):
  """The elements of `source` at sorted `indices` (int64 numpy), as a Source named `spec`."""
  indices = np.asarray(indices, np.int64)
  if source.files is not None:
    f = source.files
    pick = lambda seq: tuple(seq[i] for i in indices)
    files = FileList(pick(f.paths), f.labels[indices], pick(f.ids),
                     pick(f.encoded) if f.encoded is not None else None)
    return dataclasses.replace(source, dataset=file_list_dataset(files), files=files, records=None,
                               num_examples=len(indices), spec=spec)
  size = int(indices.max()) + 1 if indices.size else 0
  mask = np.zeros(size, bool)
  mask[indices] = True
  mask_t = tf.constant(mask if size else np.zeros(1, bool))
  ds = source.dataset.take(size).enumerate().filter(lambda i, d: mask_t[i]).map(lambda i, d: d)
  return dataclasses.replace(source, dataset=ds, records=None, num_examples=len(indices),
                             spec=spec)
