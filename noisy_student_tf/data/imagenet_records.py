"""A folder tree of labeled images -> ImageNet-style TFRecord shards, written in parallel.

FOLDER/<class>/<image> (classes numbered in sorted order, exactly as the `folder:` source does)
becomes `<prefix>-<shard:05d>-of-<num_shards:05d>` files in OUTPUT_DIR holding one
tf.train.Example per image, with the keys of the official `build_imagenet_data.py`:

  image/encoded       bytes  the file's bytes, unchanged (never re-encoded)
  image/format        bytes  'JPEG', 'PNG', 'GIF', 'BMP' or 'WEBP' (from the bytes, not the name)
  image/class/label   int64  class index + label_offset (1: ImageNet's 1-based labels, 0 = background)
  image/class/synset  bytes  the class folder's name, e.g. 'n01440764'
  image/filename      bytes  path relative to FOLDER (stable and unique: the tfrecord: source's id)
  image/height|width  int64  from the image header
  image/channels      int64  from the header (3 where the format does not say)
  image/colorspace    bytes  'RGB', 'Grayscale', ...

Read them back with `sources.open_source('tfrecord:OUTPUT_DIR/<prefix>-*', label_offset=1)`
(the manifest is named `<prefix>.manifest.json` so that this glob leaves it out).

Each shard is written under `.tmp-<name>` and renamed when whole, so a final name always holds a
complete shard; a rerun skips the shards that exist.  `<prefix>.manifest.json` records the plan
(settings, file-list fingerprint, counts per shard and class) before any shard is written, and
again with `complete: true` at the end; a rerun with another plan is refused.
"""

import collections
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import re
import struct
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import sources

MANIFEST_VERSION = 1
_SETTINGS = ('prefix', 'num_shards', 'shuffle', 'seed', 'label_offset', 'num_examples',
             'fingerprint')


def shard_name(prefix, shard_index, num_shards):
  """'<prefix>-<shard:05d>-of-<num_shards:05d>', the official build script's naming."""
  return f'{prefix}-{int(shard_index):05d}-of-{int(num_shards):05d}'


def manifest_path(output_dir, prefix):
  """OUTPUT_DIR/<prefix>.manifest.json: not matched by the glob <prefix>-* that reads the shards."""
  return os.path.join(output_dir, f'{prefix}.manifest.json')


def plan_shards(num_examples, num_shards, *, shuffle=True, seed=0):
  """Deals example indices 0..num_examples-1 into num_shards lists.

  shuffle: a permutation seeded by `seed`, then contiguous slices (each shard a uniform mix of
  classes); otherwise contiguous slices in input order.  Sizes differ by at most 1.  Returns a list
  of int arrays.
  """
  order = np.random.RandomState(int(seed)).permutation(num_examples) if shuffle \
      else np.arange(num_examples)
  return np.array_split(order, num_shards)


def _fingerprint(class_names, items):
  h = hashlib.sha256()
  for name in class_names:
    h.update(b'class\0' + name.encode('utf-8') + b'\0')
  for _, rel, label in items:
    h.update(f'{label}\0'.encode() + rel.encode('utf-8') + b'\0')
  return h.hexdigest()


# --- image headers ----------------------------------------------------------------------------

_COLORSPACE = {1: 'Grayscale', 2: 'GrayscaleAlpha', 3: 'RGB', 4: 'RGBA'}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by IHDR colour type; palette decodes to RGB


def image_format(data):
  """'JPEG', 'PNG', 'GIF', 'BMP' or 'WEBP' from the leading bytes; None when not recognised."""
  if data[:3] == b'\xff\xd8\xff':
    return 'JPEG'
  if data[:8] == b'\x89PNG\r\n\x1a\n':
    return 'PNG'
  if data[:6] in (b'GIF87a', b'GIF89a'):
    return 'GIF'
  if data[:2] == b'BM':
    return 'BMP'
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'WEBP'
  return None


def _header_shape(fmt, data):
  """(height, width, channels or None) read from the header bytes; None when unreadable."""
  try:
    if fmt == 'PNG' and data[12:16] == b'IHDR':
      width, height = struct.unpack('>II', data[16:24])
      return height, width, _PNG_CHANNELS.get(data[25])
    if fmt == 'GIF':
      width, height = struct.unpack('<HH', data[6:10])
      return height, width, 3
    if fmt == 'BMP':
      if struct.unpack('<I', data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bpp = struct.unpack('<HHHH', data[18:26])
      else:
        width, height, _, bpp = struct.unpack('<iiHH', data[18:30])
      return abs(height), abs(width), 4 if bpp == 32 else 3
    if fmt == 'WEBP':
      chunk = data[12:16]
      if chunk == b'VP8 ':
        width, height = struct.unpack('<HH', data[26:30])
        return height & 0x3fff, width & 0x3fff, 3
      if chunk == b'VP8L':
        bits = int.from_bytes(data[21:25], 'little')
        return ((bits >> 14) & 0x3fff) + 1, (bits & 0x3fff) + 1, 4 if (bits >> 28) & 1 else 3
      if chunk == b'VP8X':
        width = int.from_bytes(data[24:27], 'little') + 1
        height = int.from_bytes(data[27:30], 'little') + 1
        return height, width, 4 if data[20] & 0x10 else 3
  except struct.error:  # truncated header
    return None
  return None


def image_info(data, path=''):
  """(format, height, width, channels) of encoded image bytes.

  JPEG shapes come from tf.io.extract_jpeg_shape, the others from their header bytes, decoding
  only as a fallback.  Raises ValueError naming `path` when the bytes are not a readable image.
  """
  fmt = image_format(data)
  if fmt is None:
    raise ValueError(f'{path!r} is not a JPEG, PNG, GIF, BMP or WEBP image '
                     f'(starts with {data[:12]!r})')
  try:
    if fmt == 'JPEG':
      height, width, channels = (int(v) for v in tf.io.extract_jpeg_shape(data).numpy())
      return fmt, height, width, channels
    shape = _header_shape(fmt, data)
    if shape is None or not shape[0] or not shape[1]:
      image = (tf.io.decode_webp(data) if fmt == 'WEBP'
               else tf.io.decode_image(data, expand_animations=False))
      shape = tuple(int(v) for v in image.shape)
    height, width, channels = shape
    return fmt, height, width, channels or 3
  except tf.errors.OpError as e:
    raise ValueError(f'cannot read the {fmt} image {path!r}: {e.message}') from e


# --- writing ----------------------------------------------------------------------------------

def _bytes_feature(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(encoded, *, label, synset, filename, path=''):
  """The tf.train.Example of one image, with the official build script's keys.

  encoded: the image file's bytes (stored unchanged).  label: the stored (offset) label.
  synset: class folder name.  filename: relative path.  path: only for error messages.
  """
  fmt, height, width, channels = image_info(encoded, path or filename)
  colorspace = 'CMYK' if fmt == 'JPEG' and channels == 4 else _COLORSPACE.get(channels, 'RGB')
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': _bytes_feature(encoded),
      'image/format': _bytes_feature(fmt.encode()),
      'image/class/label': _int64_feature(int(label)),
      'image/class/synset': _bytes_feature(synset.encode('utf-8')),
      'image/filename': _bytes_feature(filename.encode('utf-8')),
      'image/height': _int64_feature(height),
      'image/width': _int64_feature(width),
      'image/channels': _int64_feature(channels),
      'image/colorspace': _bytes_feature(colorspace.encode()),
  }))


def _write_shard(path, examples):
  """Writes one shard from (path, relative path, stored label, synset) tuples through a temporary
  file and a rename; returns (path, count, seconds).  Runs in a worker process."""
  start = time.time()
  tmp = os.path.join(os.path.dirname(path), '.tmp-' + os.path.basename(path))
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for image_path, rel, label, synset in examples:
        with open(image_path, 'rb') as f:
          encoded = f.read()
        ex = make_example(encoded, label=label, synset=synset, filename=rel, path=image_path)
        # deterministic: map entries in key order, so that shards are byte-identical
        # whichever process wrote them (the order otherwise follows the string hash seed).
        writer.write(ex.SerializeToString(deterministic=True))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path, len(examples), time.time() - start


def _existing_shards(output_dir, prefix):
  pattern = re.compile(re.escape(prefix) + r'-\d{5}-of-\d{5}$')
  return sorted(f for f in os.listdir(output_dir) if pattern.match(f))


def _check_resume(output_dir, prefix, plan, names):
  """Raises ValueError when OUTPUT_DIR holds shards or a manifest of this prefix from another plan."""
  path = manifest_path(output_dir, prefix)
  existing = _existing_shards(output_dir, prefix)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = {k: (old.get(k), plan[k]) for k in _SETTINGS if old.get(k) != plan[k]}
    if diff:
      said = ', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())
      raise ValueError(f'{output_dir!r} holds {prefix}-* shards made with other settings ({said}) '
                       f'according to {path!r}; delete them or choose another output_dir or prefix')
  elif existing:
    raise ValueError(f'{output_dir!r} holds {len(existing)} {prefix}-* shards (e.g. '
                     f'{existing[0]!r}) but no manifest {path!r} saying how they were made; '
                     'delete them or choose another output_dir or prefix')
  foreign = sorted(set(existing) - set(names))
  if foreign:
    raise ValueError(f'{output_dir!r} holds {prefix}-* shards of another sharding ({foreign[0]!r}, '
                     f'now writing {names[0]!r}); delete them or choose another output_dir or prefix')


# Whether this process writes shards too while the workers start (tests turn it off to make the
# workers do all the work).
_MAIN_PROCESS_WRITES = True


def _ready():
  return os.getpid()


def _write_in_parallel(todo, paths, jobs, num_workers, report):
  """Writes shards `todo` with num_workers processes, this one included; returns the count.

  A spawned worker spends seconds importing TensorFlow before it can write, so this process
  writes shards from the start, and a worker is handed a shard only once it has answered (or
  finished its last shard): nothing waits queued behind a worker that is still starting.
  """
  main_writes = _MAIN_PROCESS_WRITES
  pool_size = min(num_workers - 1 if main_writes else num_workers, len(todo))
  queue = collections.deque(todo)
  done = 0
  # 'spawn': TensorFlow's thread pools do not survive a fork; each worker imports it afresh.
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(pool_size, mp_context=ctx) as pool:
    busy = {pool.submit(_ready): None for _ in range(pool_size)}
    try:
      while queue or busy:
        for fut in [f for f in busy if f.done()]:
          shard = busy.pop(fut)
          result = fut.result()  # raises a worker's error here
          if shard is not None:
            done += 1
            report(*result, done)
          if queue:
            i = queue.popleft()
            busy[pool.submit(_write_shard, paths[i], jobs[i])] = i
        if queue and main_writes:
          i = queue.pop()  # from the back: the workers take from the front
          done += 1
          report(*_write_shard(paths[i], jobs[i]), done)
        elif busy:
          concurrent.futures.wait(busy, return_when=concurrent.futures.FIRST_COMPLETED)
    except BaseException:
      for fut in busy:
        fut.cancel()
      raise
  return done


def write_imagenet_records(folder, output_dir, *, prefix='train', num_shards=16,
                           num_workers: Optional[int] = None, shuffle=True, seed=0,
                           label_offset=1) -> dict:
  """Writes the images of FOLDER/<class>/<image> as ImageNet-style TFRecord shards.

  folder: the class-folder tree (classes in sorted order, as the `folder:` source numbers them).
  output_dir: where `<prefix>-<i:05d>-of-<num_shards:05d>` and `<prefix>.manifest.json` go
  (created when missing).  num_shards: files to write (1 <= num_shards <= number of images).
  num_workers: processes writing shards in parallel, this one included (the others are
  'spawn'ed, so a calling script needs an `if __name__ == '__main__':` guard); None or 0 means
  min(num_shards, CPUs); 1 writes in this process only.  shuffle: deal a permutation seeded by `seed` into the shards (each a
  uniform mix of classes); False keeps class order in contiguous slices.  label_offset: added to
  the class index to give the stored label (1: ImageNet's 1-based labels).

  Shards already present from the same plan are kept (resume).  Returns the summary (also written
  as the manifest): settings, 'class_names' (synsets in label order), 'examples_per_class',
  'shards' (name and count of each), plus this run's 'written', 'skipped', 'seconds' and
  'images_per_second'.  Raises FileNotFoundError for a missing or empty folder, ValueError for bad
  arguments or when OUTPUT_DIR holds shards of this prefix made with another plan.
  """
  folder, output_dir = os.fspath(folder), os.fspath(output_dir)
  if not isinstance(prefix, str) or not prefix or '/' in prefix:
    raise ValueError(f'prefix must be a non-empty file name prefix like "train", got {prefix!r}')
  num_shards = int(num_shards)
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}')
  auto_workers = num_workers is None or int(num_workers) == 0
  if not auto_workers and int(num_workers) < 1:
    raise ValueError(f'num_workers must be >= 1 (or 0/None for automatic), got {num_workers}')
  class_names, items = sources.list_folder(folder)
  if num_shards > len(items):
    raise ValueError(f'num_shards={num_shards} is more than the {len(items)} images in '
                     f'{folder!r}; expected 1 <= num_shards <= {len(items)}')
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'output_dir {output_dir!r} exists and is not a directory')
  num_workers = min(num_shards, os.cpu_count() or 1) if auto_workers else int(num_workers)
  num_workers = min(num_workers, num_shards)

  names = [shard_name(prefix, i, num_shards) for i in range(num_shards)]
  slices = plan_shards(len(items), num_shards, shuffle=shuffle, seed=seed)
  per_class = np.bincount([label for _, _, label in items], minlength=len(class_names))
  plan = {
      'format_version': MANIFEST_VERSION, 'folder': os.path.abspath(folder),
      'prefix': prefix, 'num_shards': num_shards, 'shuffle': bool(shuffle), 'seed': int(seed),
      'label_offset': int(label_offset), 'num_examples': len(items),
      'fingerprint': _fingerprint(class_names, items),
      'num_classes': len(class_names), 'class_names': list(class_names),
      'examples_per_class': {c: int(n) for c, n in zip(class_names, per_class)},
      'shards': [{'name': n, 'num_examples': len(s)} for n, s in zip(names, slices)],
  }
  os.makedirs(output_dir, exist_ok=True)
  _check_resume(output_dir, prefix, plan, names)
  for cls, n in plan['examples_per_class'].items():
    if not n:
      logging.warning('class folder %r holds no images; its label is kept', cls)
  model_dir_lib.atomic_write_text(manifest_path(output_dir, prefix),
                                  json.dumps({**plan, 'complete': False}, indent=2) + '\n')

  todo = [i for i, n in enumerate(names) if not os.path.exists(os.path.join(output_dir, n))]
  skipped = sorted(set(names) - {names[i] for i in todo})
  if skipped:
    logging.info('%d of %d %s shards already complete in %s; writing the other %d',
                 len(skipped), num_shards, prefix, output_dir, len(todo))
  jobs = {i: [(items[j][0], items[j][1], items[j][2] + int(label_offset), class_names[items[j][2]])
              for j in slices[i]] for i in todo}
  total = sum(len(jobs[i]) for i in todo)
  start = time.time()
  done_images = 0

  def report(shard_path, count, seconds, done):
    nonlocal done_images
    done_images += count
    elapsed = max(time.time() - start, 1e-9)
    logging.info('%s: %d images in %.1fs; %d/%d shards, %d/%d images, %.0f images/s',
                 os.path.basename(shard_path), count, seconds, done, len(todo), done_images, total,
                 done_images / elapsed)

  paths = {i: os.path.join(output_dir, names[i]) for i in todo}
  done = 0
  if num_workers == 1 or len(todo) <= 1:
    for i in todo:
      done += 1
      report(*_write_shard(paths[i], jobs[i]), done)
  else:
    done = _write_in_parallel(todo, paths, jobs, num_workers, report)
  seconds = time.time() - start
  seconds = time.time() - start

  model_dir_lib.atomic_write_text(manifest_path(output_dir, prefix),
                                  json.dumps({**plan, 'complete': True}, indent=2) + '\n')
  return {**plan, 'complete': True, 'output_dir': output_dir,
          'written': [names[i] for i in todo], 'skipped': skipped, 'seconds': round(seconds, 3),
          'images_per_second': round(total / seconds, 1) if total and seconds > 0 else None}
