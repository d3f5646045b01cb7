"""File sources read a chunk at a time (sources.read_chunks) with the headers read in Python
(preprocessing.header_pixels_of_bytes): the same batches, skips and counts as reading each file
and header with TF ops, on real CIFAR-10 JPEGs, other formats, truncated and damaged files."""

import dataclasses
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import pipeline, preprocessing, sources

NOT_READ = preprocessing.PIXELS_NOT_READ


def _encode(array, fmt, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kwargs)
  return buf.getvalue()


def _tf_pixels(data):
  """image_pixels of `data`, or None where it raises (libjpeg cannot read the header)."""
  try:
    return int(preprocessing.image_pixels(data))
  except tf.errors.InvalidArgumentError:
    return None


def _decodes(data):
  try:
    preprocessing.decode(data, None)
    return True
  except tf.errors.InvalidArgumentError:
    return False


def _claims(jpeg, height, width):
  """`jpeg` with its frame header patched to claim height x width (nothing else changed)."""
  at = jpeg.index(b'\xff\xc0')
  return jpeg[:at + 5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + jpeg[at + 9:]


@pytest.fixture(scope='module')
def cifar_files(cifar10_small):
  """30 real CIFAR-10 test JPEGs (3 per class): paths."""
  out = []
  for cls in sorted(os.listdir(cifar10_small / 'test')):
    out += sorted((cifar10_small / 'test' / cls).iterdir())[:3]
  return out


def _other_images():
  rng = np.random.default_rng(0)
  rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  images = [_encode(rgb(h, w), fmt, **kw)
            for fmt, kw in [('JPEG', {}), ('JPEG', {'progressive': True}),
                            ('JPEG', {'quality': 5, 'optimize': True}),
                            ('JPEG', {'subsampling': 0}), ('PNG', {}), ('GIF', {}), ('BMP', {}),
                            ('WEBP', {'quality': 60}), ('WEBP', {'lossless': True})]
            for h, w in [(1, 1), (37, 45), (300, 17)]]
  images.append(_encode(rgb(20, 30), 'JPEG', exif=b'Exif\0\0' + bytes(200), comment=b'hi',
                        icc_profile=bytes(300)))
  images.append(_encode(rng.integers(0, 256, (9, 7), dtype=np.uint8), 'JPEG'))  # grayscale
  images.append(_encode(np.zeros((20, 30, 4), np.uint8), 'WEBP'))  # VP8X header
  return images


def test_header_pixels_of_bytes_is_image_pixels(cifar_files):
  images = [p.read_bytes() for p in cifar_files] + _other_images()
  images.append(_claims(images[0], 60000, 60000))
  for data in images:
    assert preprocessing.header_pixels_of_bytes(data) == _tf_pixels(data)
  assert preprocessing.header_pixels_of_bytes(images[-1]) == 60000 * 60000
  for unknown in (b'', b'abc', b'plain text, not an image at all', b'\xff\xd8 not a jpeg',
                  b'\x89PNG'):
    assert preprocessing.header_pixels_of_bytes(unknown) == -1 == _tf_pixels(unknown)


def _same_outcome(data):
  """True when taking header_pixels_of_bytes's count (within the default limit) instead of
  image_pixels leaves the outcome as it was: decoded either way, or skipped either way."""
  mine = preprocessing.header_pixels_of_bytes(data)
  if mine == NOT_READ or mine > preprocessing.DEFAULT_MAX_IMAGE_PIXELS:
    return True  # image_pixels reads this one as before
  theirs = _tf_pixels(data)
  decodes = _decodes(data)
  if theirs is None:
    return not decodes  # libjpeg refused the header; the decoder must refuse the image too
  return theirs == mine or not decodes


def test_no_truncation_or_damage_changes_an_outcome(cifar_files):
  """Every prefix of two JPEGs, and 300 copies with a byte of the header changed."""
  jpegs = [cifar_files[0].read_bytes(), _other_images()[4]]  # CIFAR; progressive 37 x 45
  for jpeg in jpegs:
    bad = [k for k in range(len(jpeg)) if not _same_outcome(jpeg[:k])]
    assert not bad, bad[:10]
  rng = np.random.default_rng(1)
  jpeg = jpegs[0]
  header = jpeg.index(b'\xff\xda')  # the start of scan: everything before it is header
  for _ in range(300):
    damaged = bytearray(jpeg)
    damaged[rng.integers(2, header)] = rng.integers(0, 256)
    assert _same_outcome(bytes(damaged)), bytes(damaged[:header]).hex()


@pytest.fixture(scope='module')
def mixed_folder(cifar_files, tmp_path_factory):
  """A folder: source of real JPEGs with bad files among them: truncated, not an image, a JPEG
  claiming 60000 x 60000, damaged headers, and two PNGs and a WebP."""
  root = tmp_path_factory.mktemp('mixed')
  others = _other_images()
  jpeg = cifar_files[0].read_bytes()
  bad = {'truncated.jpg': jpeg[:300], 'text.jpg': b'not an image', 'claims_huge.jpg':
         _claims(jpeg, 60000, 60000), 'empty_frame.jpg': _claims(jpeg, 0, 32),
         'extraneous.jpg': jpeg[:2] + b'\x00' + jpeg[2:], 'png.png': others[13],
         'webp.webp': others[22],  # and one over 64 KB, read in several parts
         'big.png': _encode(np.random.default_rng(2).integers(0, 256, (200, 200, 3),
                                                               dtype=np.uint8), 'PNG')}
  for i, path in enumerate(cifar_files):
    cls = root / f'c{i % 3}'
    cls.mkdir(exist_ok=True)
    (cls / f'{i:03d}.jpg').write_bytes(path.read_bytes())
  for i, (name, data) in enumerate(sorted(bad.items())):
    (root / f'c{i % 3}' / f'{i:03d}_{name}').write_bytes(data)
  return root


def _batches(source, **kwargs):
  ds = pipeline.make_eval_dataset(source, batch_size=8, resolution=32,
                                  convention=model_dir_lib.InputConvention(), small_image=True,
                                  keep_encoded=True, **kwargs)
  batches = list(ds)  # once: the counter counts every pass
  out = {k: np.concatenate([b[k].numpy() for b in batches]) for k in ('image', 'source_id',
                                                                      'label')}
  return out, ds.corrupt_counter


def _per_file(source):
  """The same source read file by file: its dataset no longer the file list's own."""
  return dataclasses.replace(source, dataset=source.dataset.map(lambda d: d))


@pytest.mark.parametrize('limit', [preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 1500, 0])
def test_chunk_reads_give_the_same_batches_skips_and_counts(mixed_folder, limit):
  source = sources.open_source(f'folder:{mixed_folder}')
  chunk = next(iter(sources.read_chunks(source, 64)))
  assert 'header_pixels' in chunk and 'header_pixels' not in next(iter(
      sources.read_chunks(_per_file(source), 64)))
  got, got_counter = _batches(source, skip_corrupt=True, max_image_pixels=limit)
  want, want_counter = _batches(_per_file(source), skip_corrupt=True, max_image_pixels=limit)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])
  assert (got_counter.count, got_counter.too_large) == (want_counter.count,
                                                        want_counter.too_large)
  # truncated, text, empty frame, extraneous bytes: corrupt (TF's libjpeg refuses the last);
  # claims_huge too large (never decoded), and with limit 1500 the PNGs and the WebP too.
  corrupt, too_large = {preprocessing.DEFAULT_MAX_IMAGE_PIXELS: (4, 1), 1500: (4, 4),
                        0: (5, 0)}[limit]
  assert (got_counter.count, got_counter.too_large) == (corrupt + too_large, too_large)
  assert len(got['source_id']) == 38 - corrupt - too_large


def test_chunk_reads_stop_where_per_file_reads_stop(mixed_folder):
  source = sources.open_source(f'folder:{mixed_folder}')
  messages = []
  for s in (source, _per_file(source)):
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
      _batches(s)
    messages.append(str(e.value).split('\n')[0].split('assertion failed: ')[-1])
  assert messages[0] == messages[1]
  # The first bad file in source order (c0/: big.png, extraneous.jpg, ...) stops both.
  assert '[corrupt image (cannot decode)] [c0/003_extraneous.jpg]' in messages[0], messages[0]


def test_which_sources_read_in_chunks(mixed_folder, tmp_path):
  source = sources.open_source(f'folder:{mixed_folder}')
  hidden = sources.as_unlabeled(source)
  chunk = next(iter(sources.read_chunks(hidden, 64)))
  assert 'header_pixels' in chunk and set(chunk['label'].numpy()) == {-1}
  subset = sources.subset(source, np.arange(0, 30, 2), 'every other')
  np.testing.assert_array_equal(
      next(iter(sources.read_chunks(subset, 64)))['source_id'].numpy(),
      np.asarray(source.files.ids)[np.arange(0, 30, 2)].astype(bytes))
  digits = sources.open_source('digits:test')  # in-memory bytes: nothing to read
  assert 'header_pixels' not in next(iter(sources.read_chunks(digits, 64)))
  gone = tmp_path / 'gone'
  (gone / 'a').mkdir(parents=True)
  (gone / 'a' / 'x.jpg').write_bytes(b'x')
  lost = sources.open_source(f'folder:{gone}')
  os.remove(gone / 'a' / 'x.jpg')
  with pytest.raises(tf.errors.NotFoundError, match='x.jpg'):
    next(iter(sources.read_chunks(lost, 64)))


def test_small_image_chunks_of_r_by_r_images_are_decoded_as_they_are(cifar_files, tmp_path):
  """A chunk whose headers all say 32 * 32 pixels is decoded without the per-image crop
  (pipeline._decode_unchanged, 8 images a loop iteration); a 16 x 64 JPEG has as many pixels and
  sends its chunk back to the per-image crop.  Either way the batches are eval_preprocess of each
  file, at chunk sizes that leave a remainder of the group and at one that does not."""
  wide = _encode(np.random.default_rng(3).integers(0, 256, (16, 64, 3), dtype=np.uint8), 'JPEG')
  rows = tf.constant([p.read_bytes() for p in cifar_files[:11]])
  np.testing.assert_array_equal(pipeline._decode_unchanged(rows, 32).numpy(),  # pylint: disable=protected-access
                                np.stack([preprocessing.decode(r, None).numpy() for r in rows]))
  with pytest.raises(tf.errors.InvalidArgumentError):
    pipeline._decode_unchanged(tf.concat([rows, [wide]], 0), 32)  # pylint: disable=protected-access
  (tmp_path / 'a').mkdir()
  for i, path in enumerate(cifar_files):
    (tmp_path / 'a' / f'{i:03d}.jpg').write_bytes(path.read_bytes())
  (tmp_path / 'a' / '013_wide.jpg').write_bytes(wide)
  source = sources.open_source(f'folder:{tmp_path}')
  convention = model_dir_lib.InputConvention()
  want = np.stack([preprocessing.eval_preprocess(d['encoded'], 32, convention, small_image=True)
                   .numpy() for d in _per_file(source).dataset])
  for batch_size in (8, 11, 31):
    got = np.concatenate([b['image'].numpy() for b in pipeline.make_eval_dataset(
        source, batch_size=batch_size, resolution=32, convention=convention, small_image=True,
        skip_corrupt=True)])
    np.testing.assert_array_equal(got, want)
