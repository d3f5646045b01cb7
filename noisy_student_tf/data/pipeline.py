"""tf.data pipelines: the teacher's (evaluation / labeling, no noise) and the student's (training,
mixed labeled + pseudo-labeled batches, RandAugment noise).

Corrupt images.  Decoding never crashes a pipeline half-way without a name: an undecodable image
either stops the run with an InvalidArgumentError naming its source_id and source spec
(skip_corrupt=False, the default: right for labeled data), or is skipped, logged (one line on
stderr with its source_id) and counted (skip_corrupt=True: right for unlabeled data).  Read the
count after (or while) iterating:

  counter = CorruptCounter()
  ds = make_eval_dataset(source, ..., skip_corrupt=True, corrupt_counter=counter)
  for batch in ds: ...
  counter.count        # int; also reachable as ds.corrupt_counter.count
  counter.source_ids   # the skipped images' source ids (first 1000)

Too large images.  An image whose header says it has more than `max_image_pixels` pixels
(height x width; default preprocessing.DEFAULT_MAX_IMAGE_PIXELS = 64 MP, 0 or None: no limit) is
never decoded and is handled exactly like a corrupt one: skipped and counted (counter.count
includes it, counter.too_large counts those alone) or an InvalidArgumentError naming its
source_id, its pixel count, the limit and --max_image_pixels.
"""

import logging
import threading

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import augment as augment_lib
from noisy_student_tf.data import batch_augment
from noisy_student_tf.data import order
from noisy_student_tf.data import preprocessing
from noisy_student_tf.data import sources

DEFAULT_SHUFFLE_BUFFER = 10000
_AUTOTUNE = tf.data.AUTOTUNE


class CorruptCounter:
  """Counts (and names) images skipped as undecodable or too large by the pipelines it is passed
  to: `count` is every skipped image, `too_large` those over max_image_pixels among them.

  Updated from inside tf.data through tf.py_function, only when an image is corrupt, so it works
  under any distribution strategy and costs nothing on healthy data.  Thread-safe.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._count = 0
    self._too_large = 0
    self.source_ids = []  # the first MAX_NAMES skipped ids, for stats files

  MAX_NAMES = 1000

  @property
  def count(self) -> int:
    """Number of corrupt images skipped so far."""
    with self._lock:
      return self._count

  @property
  def too_large(self) -> int:
    """Number of images skipped so far because they have more than max_image_pixels pixels."""
    with self._lock:
      return self._too_large

  def _record(self, source_id, spec, status, pixels):
    sid = source_id.numpy().decode('utf-8', 'replace')
    too_large = int(status.numpy()) == TOO_LARGE
    with self._lock:
      self._count += 1
      self._too_large += too_large
      if len(self.source_ids) < self.MAX_NAMES:
        self.source_ids.append(sid)
    if too_large:
      logging.warning('skipping too large image %r in %s (%d pixels)', sid, spec.numpy().decode(),
                      int(pixels.numpy()))
    else:
      logging.warning('skipping corrupt image %r in %s', sid, spec.numpy().decode())
    return np.int64(0)

  def _record_all(self, source_ids, specs, statuses, pixels):
    for row in zip(source_ids, specs, statuses, pixels):
      self._record(*row)
    return np.int64(0)


class DecodeCounter:
  """Counts the images a training pipeline decodes (`count`; read after or while iterating): the
  measure of an input pipeline's share of the work (make_train_dataset's num_shards).  Counted by
  a CPU variable inside tf.data, so it works under any distribution strategy; the count includes
  the images decoded ahead into tf.data's buffers."""

  def __init__(self):
    with tf.init_scope(), tf.device('/cpu:0'):
      self._decoded = tf.Variable(0, dtype=tf.int64, trainable=False, name='decoded_images')

  @property
  def count(self) -> int:
    """Number of images decoded (or attempted) so far."""
    return int(self._decoded.numpy())

  def _increment(self):
    return self._decoded.assign_add(1)


# _try_decode's status.
OK, CORRUPT, TOO_LARGE = 0, 1, 2


def _check_max_image_pixels(max_image_pixels):
  """Raises ValueError unless max_image_pixels is None or >= 0 (0: no limit)."""
  if max_image_pixels is not None and int(max_image_pixels) < 0:
    raise ValueError(f'max_image_pixels must be >= 0 (0: no limit), got {max_image_pixels!r}')


def _attempt_decode(image_bytes, limit, finish, empty):
  """(finish(decoded image), status, pixels) for one encoded image, raising where TF's decoder
  does: an image over `limit` pixels by its header (limit > 0) is never decoded and gives
  (`empty`, TOO_LARGE, pixels); without a limit pixels is -1 (not read).  Callers catch the
  errors with tf.data's ignore_errors (CORRUPT)."""
  def decoded():
    return finish(preprocessing.decode(image_bytes, None))
  if not limit:
    return decoded(), tf.constant(OK), tf.constant(-1, tf.int64)
  pixels = preprocessing.image_pixels(image_bytes)
  too_large = pixels > limit
  return tf.cond(too_large, lambda: empty, decoded), tf.where(too_large, TOO_LARGE, OK), pixels


def _stop_on_bad_image(status, source_id, spec, pixels, max_image_pixels):
  """Assert ops that stop the run with an InvalidArgumentError naming `source_id` and its source
  `spec` when `status` (a scalar of _try_decode's codes) is CORRUPT or TOO_LARGE (`pixels` by the
  header, over max_image_pixels)."""
  where = [source_id, 'in source', spec]
  return [
      tf.debugging.Assert(tf.not_equal(status, CORRUPT),
                          ['corrupt image (cannot decode)'] + where +
                          ['; pass skip_corrupt / --skip_corrupt to skip such images']),
      tf.debugging.Assert(tf.not_equal(status, TOO_LARGE),
                          ['image too large:'] + where + ['has', pixels,
                           preprocessing.pixel_limit_message(max_image_pixels or 0) +
                           '; raise the limit or pass skip_corrupt / --skip_corrupt to skip '
                           'such images'])]


def _try_decode(encoded, max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS):
  """(uint8 [H, W, 3] image, status, pixels) without raising: OK with the image; CORRUPT or
  TOO_LARGE (more than max_image_pixels by the header, never decoded) with [1, 1, 3] zeros.
  pixels: preprocessing.image_pixels (-1 when unknown or not read: no limit).

  TF has no non-raising decoder, so the header read and the decode run inside a one-element
  dataset whose errors are dropped; a fallback element follows it.
  """
  limit = int(max_image_pixels or 0)
  empty = tf.zeros([1, 1, 3], tf.uint8)

  # The map functions of this module are traced as written (no AutoGraph): they have no
  # tensor-dependent Python control flow, and AutoGraph's source transformation of them and of
  # everything they call (preprocessing, RandAugment) costs seconds of CPU in every process.
  @tf.autograph.experimental.do_not_convert
  def attempt_fn(e):
    return _attempt_decode(e, limit, lambda image: image, empty)

  attempt = tf.data.Dataset.from_tensors(encoded).map(attempt_fn).ignore_errors()
  fallback = tf.data.Dataset.from_tensors((empty, tf.constant(CORRUPT), tf.constant(-1, tf.int64)))
  return attempt.concatenate(fallback).take(1).get_single_element()


def _decode_stage(ds, spec, skip_corrupt, counter,
                  max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS, decode_counter=None):
  """Maps element dicts to dicts with a decoded 'image', handling corrupt and too large images
  (see module doc).  Elements with a 'spec' entry name that source in errors instead of `spec`.
  decode_counter: optional DecodeCounter counting every image decoded."""
  _check_max_image_pixels(max_image_pixels)
  default_spec = spec

  @tf.autograph.experimental.do_not_convert
  def decode(d):
    spec = d.get('spec', default_spec)
    encoded = d['encoded']
    if decode_counter is not None:
      with tf.control_dependencies([decode_counter._increment()]):
        encoded = tf.identity(encoded)
    image, status, pixels = _try_decode(encoded, max_image_pixels)
    ok = tf.equal(status, OK)
    if skip_corrupt:
      def report():
        return tf.py_function(counter._record, [d['source_id'], spec, status, pixels],
                              Tout=tf.int64)
      tf.cond(ok, lambda: tf.constant(0, tf.int64), report)
    else:
      _stop_on_bad_image(status, d['source_id'], spec, pixels, max_image_pixels)
    return {**d, 'image': image, 'ok': ok}

  ds = ds.map(decode, num_parallel_calls=_AUTOTUNE, deterministic=True)
  if skip_corrupt:
    ds = ds.filter(lambda d: d['ok'])
  return ds


# Images per element of the evaluation pipeline's decode map: one error-catching dataset per
# chunk instead of one per image (see _crop_chunk); at most EVAL_CHUNK crops of 224 x 224 pixels
# or as many crop pixels (more, smaller crops at lower resolutions), so that the chunks decoded
# side by side on a many-core host hold no more than a few batches' worth of images.
EVAL_CHUNK = 64
EVAL_CHUNK_PIXELS = EVAL_CHUNK * 224 * 224


def eval_chunk_size(batch_size, resolution):
  """Images per decode chunk of make_eval_dataset at `batch_size` and `resolution` (ints): at
  most the batch, and at most EVAL_CHUNK_PIXELS crop pixels (at least EVAL_CHUNK images)."""
  by_pixels = max(EVAL_CHUNK, EVAL_CHUNK_PIXELS // (int(resolution) * int(resolution)))
  return min(int(batch_size), by_pixels)


def _failed_rows(chunk, status, pixels, *, spec, skip_corrupt, counter, max_image_pixels):
  """Handles the rows of `chunk` (a dict of [n] tensors with 'source_id') whose `status` (int32
  [n], _try_decode's codes; `pixels` int64 [n]) is not OK: with skip_corrupt, each is logged and
  counted on `counter`; without, the first of them stops the run with an InvalidArgumentError
  naming its source_id and source (the messages of _decode_stage).  Returns an op to depend on
  (a no-op when every row is OK)."""
  failed = tf.cast(tf.where(tf.not_equal(status, OK))[:, 0], tf.int32)

  def handle():
    source_ids = tf.gather(chunk['source_id'], failed)
    specs = (tf.gather(chunk['spec'], failed) if 'spec' in chunk
             else tf.fill(tf.shape(failed), tf.constant(spec or '')))
    statuses, sizes = tf.gather(status, failed), tf.gather(pixels, failed)
    if skip_corrupt:
      return tf.py_function(counter._record_all, [source_ids, specs, statuses, sizes],
                            Tout=tf.int64)
    checks = _stop_on_bad_image(statuses[0], source_ids[0], specs[0], sizes[0],
                                max_image_pixels)
    with tf.control_dependencies(checks):
      return tf.constant(0, tf.int64)

  return tf.cond(tf.size(failed) > 0, handle, lambda: tf.constant(0, tf.int64))


# Images per loop iteration of _decode_unchanged: a map_fn's while loop costs ~7 CPU-µs per
# iteration, half a 32 px JPEG's decode.
DECODE_GROUP = 8


def _decode_unchanged(rows, resolution):
  """The decoded images of `rows` (string [n]) as uint8 [n, R, R, 3], for small-image chunks
  whose headers all say R * R pixels: center_crop(small_image=True) leaves an R x R image as it
  is, so no per-image crop (and its tf.cond) is needed.  Raises for an image that does not decode
  or is not R x R (a 16 x 64 one has R * R pixels too): the caller then crops image by image.
  Decodes DECODE_GROUP images per loop iteration (the last n % DECODE_GROUP one each)."""
  k = DECODE_GROUP
  decode = lambda b: tf.ensure_shape(preprocessing.decode(b, None), [resolution, resolution, 3])
  n = tf.shape(rows)[0]
  whole = n // k * k
  grouped = tf.map_fn(
      lambda group: tf.stack([decode(b) for b in tf.unstack(group, num=k)]),
      tf.reshape(rows[:whole], [-1, k]),
      fn_output_signature=tf.TensorSpec([k, resolution, resolution, 3], tf.uint8))
  rest = tf.map_fn(decode, rows[whole:],
                   fn_output_signature=tf.TensorSpec([resolution, resolution, 3], tf.uint8))
  return tf.concat([tf.reshape(grouped, [-1, resolution, resolution, 3]), rest], 0)


def _crop_chunk(chunk, *, resolution, convention, small_image, max_image_pixels):
  """(status int32 [n], pixels int64 [n], kept int32 [k], uint8 [k, R, R, 3]) for the rows of
  `chunk` (a dict of [n] tensors with 'encoded', and 'header_pixels' when the source read them:
  sources.read_chunks): each row's _try_decode status and header pixel count (-1: not read), and
  the evaluation crops of the rows that decode, with their indices.

  TF has no non-raising decoder, so errors are caught by tf.data.  First the whole chunk is
  decoded in one map_fn (a one-element dataset whose error drops it: about 30 CPU-µs per image
  less than a dataset element per image, at 32 px half the input pipeline's cost); only a chunk
  where that raises, or where a header says an image is over the limit, is decoded again one
  dataset element per image, whose errors drop that image alone (instead of one dataset per
  image as _try_decode does).  As in _try_decode, an image over max_image_pixels by its header
  is never decoded (TOO_LARGE, with its pixels) and one whose header or data raises is CORRUPT
  (pixels -1).  A header count from the source within the limit is taken as it is (the decoder
  reads the same header and raises where image_pixels would); other rows read theirs with
  image_pixels."""
  encoded = chunk['encoded']
  n = tf.shape(encoded)[0]
  limit = int(max_image_pixels or 0)
  empty = tf.zeros([resolution, resolution, 3], tf.uint8)
  finish = lambda image: preprocessing.center_crop(image, resolution, convention, small_image)
  decode_crop = lambda image_bytes: finish(preprocessing.decode(image_bytes, None))
  spec = tf.TensorSpec([resolution, resolution, 3], tf.uint8)
  header = chunk.get('header_pixels') if limit else None
  if header is not None:
    known = (header != preprocessing.PIXELS_NOT_READ) & (header <= limit)
  nothing = tf.data.Dataset.from_tensors(
      (tf.zeros([0], tf.int32), tf.zeros([0, resolution, resolution, 3], tf.uint8),
       tf.zeros([0], tf.int32), tf.zeros([0], tf.int64)))

  def crop(index, image_bytes):
    image, status, pixels = _attempt_decode(image_bytes, limit, finish, empty)
    return index, image, status, pixels

  def crop_known(index, image_bytes, pixels):  # header read already, within the limit
    return index, decode_crop(image_bytes), tf.constant(OK), pixels

  def crop_all(rows):
    """The whole chunk at once; raises (dropping it) at the first image that would fail."""
    if not limit:
      pixels = tf.fill([n], tf.constant(-1, tf.int64))
    elif header is not None:  # only chunks whose every header is known and within the limit
      pixels = header
    else:
      pixels = tf.map_fn(preprocessing.image_pixels, rows, fn_output_signature=tf.int64)
    checks = ([] if not limit or header is not None else
              [tf.debugging.Assert(tf.reduce_all(pixels <= limit), ['over the limit'])])
    with tf.control_dependencies(checks):
      if small_image and header is not None:
        crops = tf.cond(tf.reduce_all(header == resolution * resolution),
                        lambda: _decode_unchanged(rows, resolution),
                        lambda: tf.map_fn(decode_crop, rows, fn_output_signature=spec))
      else:
        crops = tf.map_fn(decode_crop, rows, fn_output_signature=spec)
    return tf.range(n), crops, tf.fill([n], OK), pixels

  whole = tf.data.Dataset.from_tensors(encoded)
  if header is not None:
    whole = whole.filter(lambda _: tf.reduce_all(known))
  whole = whole.map(tf.autograph.experimental.do_not_convert(crop_all)).ignore_errors()

  def one_by_one(_):
    """The chunk one image per dataset element, in source order (one element)."""
    if header is None:
      rows = tf.data.Dataset.from_tensor_slices((tf.range(n), encoded)).map(
          tf.autograph.experimental.do_not_convert(crop))
    else:
      at_known, at_other = (tf.cast(tf.where(k)[:, 0], tf.int32) for k in (known, ~known))
      rows = tf.data.Dataset.from_tensor_slices(
          (at_known, tf.gather(encoded, at_known), tf.gather(header, at_known))).map(
              tf.autograph.experimental.do_not_convert(crop_known)).concatenate(
                  tf.data.Dataset.from_tensor_slices(
                      (at_other, tf.gather(encoded, at_other))).map(
                          tf.autograph.experimental.do_not_convert(crop)))

    def in_order(index, crops, status, pixels):  # the known rows came first
      order = tf.argsort(index, stable=True)
      return tuple(tf.gather(t, order) for t in (index, crops, status, pixels))
    return rows.ignore_errors().batch(tf.cast(tf.maximum(n, 1), tf.int64)).map(in_order)

  # Read in order and lazily: flat_map builds the per-image dataset only when the whole-chunk
  # decode gave nothing.
  by_image = tf.data.Dataset.from_tensors(0).flat_map(
      tf.autograph.experimental.do_not_convert(one_by_one))
  index, crops, got_status, got_pixels = whole.concatenate(by_image).concatenate(
      nothing).take(1).get_single_element()
  at = index[:, None]
  status = tf.tensor_scatter_nd_update(tf.fill([n], CORRUPT), at, got_status)
  pixels = tf.tensor_scatter_nd_update(tf.fill([n], tf.constant(-1, tf.int64)), at, got_pixels)
  ok = tf.where(tf.equal(got_status, OK))[:, 0]
  return status, pixels, tf.gather(index, ok), tf.gather(crops, ok)


def make_eval_dataset(source, *, batch_size, resolution, convention, small_image=False,
                      keep_encoded=False, skip_corrupt=False, image_transform=None,
                      corrupt_counter=None,
                      max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS) -> tf.data.Dataset:
  """The teacher's pipeline: deterministic center crops in source order, no augmentation.

  source: a sources.Source.  convention: model_dir.InputConvention.  image_transform: optional
  callable uint8 [R, R, 3] -> uint8 [R, R, 3] applied to the crop before normalisation (e.g. a
  corruption).  skip_corrupt / corrupt_counter / max_image_pixels: see the module docstring.
  Returns a finite dataset of dict batches {'image': float32 [B, R, R, 3], 'label': int64 [B],
  'source_id': string [B], and 'encoded': string [B] when keep_encoded}; the last batch may be
  smaller.  Images are decoded eval_chunk_size() at a time (_crop_chunk); the batches are the
  same as decoding them one by one.
  """
  _check_positive(batch_size=batch_size, resolution=resolution)
  _check_max_image_pixels(max_image_pixels)
  if skip_corrupt and corrupt_counter is None:
    corrupt_counter = CorruptCounter()
  batch_size, resolution = int(batch_size), int(resolution)
  chunk_size = eval_chunk_size(batch_size, resolution)

  @tf.autograph.experimental.do_not_convert
  def prepare(chunk):
    status, pixels, kept, crops = _crop_chunk(
        chunk, resolution=resolution, convention=convention, small_image=small_image,
        max_image_pixels=max_image_pixels)
    with tf.control_dependencies([_failed_rows(
        chunk, status, pixels, spec=source.spec, skip_corrupt=skip_corrupt,
        counter=corrupt_counter, max_image_pixels=max_image_pixels)]):
      kept = tf.identity(kept)
    if image_transform is not None:
      crops = tf.map_fn(
          lambda image: tf.ensure_shape(tf.cast(image_transform(image), tf.uint8),
                                        [resolution, resolution, 3]),
          crops, fn_output_signature=tf.TensorSpec([resolution, resolution, 3], tf.uint8))
    keys = ('label', 'source_id') + (('encoded',) if keep_encoded else ())
    return {'image': preprocessing.normalize(crops, convention),
            **{k: tf.gather(chunk[k], kept) for k in keys}}

  ds = sources.read_chunks(source, chunk_size).map(prepare, num_parallel_calls=_AUTOTUNE,
                                                   deterministic=True)
  if skip_corrupt or chunk_size != batch_size:
    ds = ds.rebatch(batch_size)  # whole batches again after skipped images or across chunks
  ds = ds.prefetch(_AUTOTUNE)
  ds.corrupt_counter = corrupt_counter
  return ds


def _check_positive(**values):
  for name, v in values.items():
    if v is None or int(v) < 1:
      raise ValueError(f'{name} must be a positive integer, got {v!r}')


def _one_hot_targets(label, num_classes, label_smoothing, spec):
  tf.debugging.assert_less(label, tf.constant(num_classes, tf.int64),
                           message=f'label out of range for num_classes={num_classes} in {spec}')
  tf.debugging.assert_non_negative(label, message=f'unlabeled example in labeled source {spec}')
  one_hot = tf.one_hot(label, num_classes, dtype=tf.float32)
  return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def _pseudo_targets(target, num_classes, hard_label_smoothing):
  """A pseudo-label record's target [C]: hard (one-hot) ones smoothed with
  `hard_label_smoothing`, soft ones as they are (as the official code: it smooths the one-hot
  pseudo-labels with its --label_smoothing and uses soft distributions unchanged)."""
  target = tf.ensure_shape(target, [num_classes])
  if not hard_label_smoothing:
    return target
  is_hard = tf.equal(tf.reduce_max(target), 1.0)  # ns-label writes hard labels as exact 0/1
  smoothed = target * (1.0 - hard_label_smoothing) + hard_label_smoothing / num_classes
  return tf.where(is_hard, smoothed, target)


def _train_image(image, *, resolution, convention, small_image, augment, flip, on_host=True):
  """A decoded uint8 image -> the normalised, cropped, flipped and augmented training input;
  on_host=False: the uint8 crop the train step augments (batch_augment.host_crop)."""
  if not on_host:
    return batch_augment.host_crop(image, resolution, convention, small_image, flip)
  image = preprocessing.train_crop(image, resolution, convention, small_image, flip=flip,
                                   augment=augment)
  return preprocessing.normalize(image, convention)


def _train_stream(source, rows, *, resolution, convention, small_image, augment, targets,
                  shuffle_buffer, seed, skip_corrupt, counter, flip, on_host=True,
                  max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS, decode_counter=None):
  """An endless, shuffled, augmented stream of (image float32 [rows, R, R, 3], target [rows, C])."""
  # A full permutation of the files or record chunks every epoch, then the element buffer: a
  # buffer alone over a class-ordered source trains a few classes per batch (data/order.py).
  ds = order.shuffled_stream(source, seed=seed, shuffle_buffer=shuffle_buffer)
  ds = _decode_stage(ds, source.spec, skip_corrupt, counter, max_image_pixels, decode_counter)

  @tf.autograph.experimental.do_not_convert
  def prepare(d):
    image = _train_image(d['image'], resolution=resolution, convention=convention,
                         small_image=small_image, augment=augment, flip=flip, on_host=on_host)
    return image, targets(d)

  ds = ds.map(prepare, num_parallel_calls=_AUTOTUNE, deterministic=False)
  return ds.batch(rows, drop_remainder=True)


def _row_order(seed, index, rows):
  """The in-batch shuffle of global batch `index`: int32 [rows], keyed by (seed, index), so that
  every input pipeline of a multi-worker run permutes global batch `index` alike."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(rows), seed=tf.stack([tf.cast(seed or 0, tf.int64), index]))


def _undecoded_batches(source, rows, *, seed, shuffle_buffer, targets):
  """Global batches of `rows` unread or undecoded elements of the shuffled stream (the same
  elements, in the same order, as _train_stream decodes): dicts of 'encoded' (empty for a file
  on disk), 'path' (the file to read; empty for in-memory bytes and records), 'source_id', 'spec'
  [rows] and 'target' [rows, C]."""
  spec = tf.constant(source.spec)
  ds = order.shuffled_stream(source, seed=seed, shuffle_buffer=shuffle_buffer, read_files=False)
  ds = ds.map(lambda d: {'encoded': d['encoded'], 'path': d.get('path', tf.constant('')),
                         'source_id': d['source_id'], 'spec': spec, 'target': targets(d)},
              num_parallel_calls=_AUTOTUNE, deterministic=True)
  return ds.batch(rows, drop_remainder=True)


def _read_file(d):
  """An _undecoded_batches row with its file read into 'encoded' (rows without a path as they
  are)."""
  encoded = tf.cond(tf.equal(d['path'], ''), lambda: d['encoded'],
                    lambda: tf.io.read_file(d['path']))
  return {**d, 'encoded': encoded}


def _sharded_batches(labeled_rows, pseudo_rows, b, u, *, seed, num_shards, shard_index,
                     image_fn, max_image_pixels, decode_counter, num_batches=None):
  """This input pipeline's share of every global batch, decoded and augmented alone.

  labeled_rows / pseudo_rows (None: labeled only): _undecoded_batches of b / u rows.  The global
  batch is formed and shuffled (_row_order) on unread, undecoded elements exactly as
  make_train_dataset forms it from decoded ones; its rows [shard_index * S, (shard_index + 1) *
  S), S = (b + u) / num_shards, are then read (files), decoded, augmented (image_fn) and batched
  in order, so the shards of one global batch partition it.  num_batches: only the first global batches, none decoded beyond.
  Returns batches (images [S, ...], targets [S, C], weights [S]).
  """
  share = (b + u) // num_shards
  first = shard_index * share

  def keep(rows, weights, order=None):
    rows = {**rows, 'weight': weights}
    if order is not None:
      rows = {k: tf.gather(v, order) for k, v in rows.items()}
    return {k: v[first:first + share] for k, v in rows.items()}

  if pseudo_rows is None:
    ds = labeled_rows.map(lambda rows: keep(rows, tf.fill([b], 1.0 / b)))
  else:
    def mix(index, batches):
      lab, pse = batches
      rows = {k: tf.concat([lab[k], pse[k]], 0) for k in lab}
      weights = tf.concat([tf.fill([b], 1.0 / b), tf.fill([u], 1.0 / u)], 0)
      return keep(rows, weights, _row_order(seed, index, b + u))
    ds = tf.data.Dataset.zip((labeled_rows, pseudo_rows)).enumerate().map(mix)
  if num_batches is not None:
    ds = ds.take(int(num_batches))
  ds = ds.unbatch().map(_read_file, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = _decode_stage(ds, None, False, None, max_image_pixels, decode_counter)
  # In order: a row must stay in its global batch (its weight is that batch's 1/B or 1/U).
  ds = ds.map(tf.autograph.experimental.do_not_convert(
      lambda d: (image_fn(d['image']), d['target'], d['weight'])),
      num_parallel_calls=_AUTOTUNE, deterministic=True)
  return ds.batch(share, drop_remainder=True).prefetch(_AUTOTUNE)


def make_train_dataset(labeled, *, batch_size, resolution, num_classes, convention,
                       small_image=False, randaug_layers=0, randaug_magnitude=0,
                       randaug_on='host',
                       label_smoothing=0.1, pseudo=None, unlabeled_ratio=1.0, seed=None,
                       hard_pseudo_label_smoothing=0.0,
                       skip_corrupt=False, shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
                       corrupt_counter=None, flip=True,
                       max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS,
                       num_shards=1, shard_index=0, decode_counter=None,
                       num_batches=None) -> tf.data.Dataset:
  """The student's pipeline: endless batches of (images, targets, weights).

  labeled: Source with labels; pseudo: optional Source of pseudo-label records (its 'target'
  distributions are used as they are).  Each step takes B = batch_size labeled rows (one-hot
  targets with label_smoothing) and U = round(unlabeled_ratio * B) pseudo rows, each stream
  shuffled, repeated and augmented on its own (RandAugment(randaug_layers, randaug_magnitude) on
  the official 0-10+ scale when randaug_layers > 0; see augment.py).  Rows are shuffled within the
  batch, so any split across replicas gets a mix.
  randaug_on='accelerator' (with randaug_layers > 0): no RandAugment here, the images are the
  uint8 crops batch_augment.host_crop leaves for the train step to augment and normalise
  (batch_augment.make_batch_noise).
  Returns a dataset of tuples (images float32 [B+U, R, R, 3], targets float32 [B+U, C],
  weights float32 [B+U]) with weights 1/B on labeled rows and 1/U on pseudo rows: sum(weights * CE)
  over the batch = mean CE(labeled) + mean CE(pseudo).  Without pseudo: B rows, weights 1/B.
  flip=False turns off the horizontal flip (digits, SVHN).  max_image_pixels: see the module doc.
  num_shards > 1 (multi-worker input pipelines, with a seed): the batches hold only this shard's
  rows of every global batch, rows [shard_index * S, (shard_index + 1) * S) with S = (B+U) /
  num_shards, and only those images are read (files), decoded and augmented; the other rows are
  never decoded (records of them are read, files not).  The shards of one seed partition the global batches exactly.  Not with skip_corrupt
  (a skipped image would shift every later row of one shard only).  decode_counter: optional
  DecodeCounter of the images decoded.  num_batches: a finite dataset of that many batches
  (None: endless); with num_shards > 1 no image beyond them is decoded.
  """
  _check_positive(batch_size=batch_size, resolution=resolution, num_classes=num_classes,
                  shuffle_buffer=shuffle_buffer)
  for name, value in (('label_smoothing', label_smoothing),
                      ('hard_pseudo_label_smoothing', hard_pseudo_label_smoothing)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f'{name} must be in [0, 1), got {value!r}')
  if pseudo is not None:
    if unlabeled_ratio is None or unlabeled_ratio <= 0:
      raise ValueError(f'unlabeled_ratio must be > 0 with pseudo-labeled data, got '
                       f'{unlabeled_ratio!r}')
    if pseudo.num_classes is not None and pseudo.num_classes != num_classes:
      raise ValueError(f'pseudo-label records {pseudo.spec!r} have {pseudo.num_classes} classes, '
                       f'the model has num_classes={num_classes}')
  num_shards, shard_index = int(num_shards), int(shard_index)
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f'shard_index must be in [0, num_shards), num_shards >= 1; got shard_index='
                     f'{shard_index!r}, num_shards={num_shards!r}')
  if num_shards > 1 and (seed is None or skip_corrupt):
    raise ValueError(f'num_shards={num_shards} needs a seed (every shard must draw the same '
                     f'order; got {seed!r}) and skip_corrupt=False (got {skip_corrupt!r})')
  if skip_corrupt and corrupt_counter is None:
    corrupt_counter = CorruptCounter()
  augment = augment_lib.make_randaugment(randaug_layers, randaug_magnitude, resolution,
                                         small_image=small_image)
  if randaug_on not in ('host', 'accelerator'):
    raise ValueError(f"randaug_on must be 'host' or 'accelerator', got {randaug_on!r}")
  # The step augments: uint8 crops (batch_augment.host_crop), no RandAugment here.
  on_host = augment is None or randaug_on == 'host'
  augment = augment if on_host else None
  b = int(batch_size)
  seed2 = None if seed is None else seed + 1
  common = dict(resolution=int(resolution), convention=convention, small_image=small_image,
                augment=augment, shuffle_buffer=int(shuffle_buffer), skip_corrupt=skip_corrupt,
                counter=corrupt_counter, flip=flip, max_image_pixels=max_image_pixels,
                decode_counter=decode_counter, on_host=on_host)
  u = max(1, int(round(unlabeled_ratio * b))) if pseudo is not None else 0
  if (b + u) % num_shards:
    raise ValueError(f'a global batch of {b + u} rows does not split into num_shards={num_shards}')
  if num_shards > 1:
    undecoded = dict(shuffle_buffer=int(shuffle_buffer))
    labeled_rows = _undecoded_batches(
        labeled, b, seed=seed, **undecoded,
        targets=lambda d: _one_hot_targets(d['label'], num_classes, label_smoothing, labeled.spec))
    pseudo_rows = None if pseudo is None else _undecoded_batches(
        pseudo, u, seed=seed2, **undecoded,
        targets=lambda d: _pseudo_targets(d['target'], num_classes, hard_pseudo_label_smoothing))
    image_fn = lambda image: _train_image(image, resolution=int(resolution), convention=convention,
                                          small_image=small_image, augment=augment, flip=flip,
                                          on_host=on_host)
    return _sharded_batches(labeled_rows, pseudo_rows, b, u, seed=seed, num_shards=num_shards,
                            shard_index=shard_index, image_fn=image_fn,
                            max_image_pixels=max_image_pixels, decode_counter=decode_counter,
                            num_batches=num_batches)
  labeled_ds = _train_stream(
      labeled, b, seed=seed,
      targets=lambda d: _one_hot_targets(d['label'], num_classes, label_smoothing, labeled.spec),
      **common)
  if pseudo is None:
    ds = labeled_ds.map(lambda x, y: (x, y, tf.fill([b], 1.0 / b)))
    ds = (ds if num_batches is None else ds.take(int(num_batches))).prefetch(_AUTOTUNE)
    ds.corrupt_counter = corrupt_counter
    return ds

  pseudo_ds = _train_stream(pseudo, u, seed=seed2,
                            targets=lambda d: _pseudo_targets(d['target'], num_classes,
                                                              hard_pseudo_label_smoothing),
                            **common)

  @tf.autograph.experimental.do_not_convert
  def mix(index, batches):
    lab, pse = batches
    images = tf.concat([lab[0], pse[0]], 0)
    targets = tf.concat([lab[1], pse[1]], 0)
    weights = tf.concat([tf.fill([b], 1.0 / b), tf.fill([u], 1.0 / u)], 0)
    order = _row_order(seed, index, b + u)
    return tf.gather(images, order), tf.gather(targets, order), tf.gather(weights, order)

  ds = tf.data.Dataset.zip((labeled_ds, pseudo_ds)).enumerate().map(
      mix, num_parallel_calls=_AUTOTUNE)
  ds = (ds if num_batches is None else ds.take(int(num_batches))).prefetch(_AUTOTUNE)
  ds.corrupt_counter = corrupt_counter
  return ds
