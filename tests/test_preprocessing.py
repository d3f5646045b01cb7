"""Preprocessing shortcuts that must not change a pixel: JPEG rows decoded from the crop's top
(decode_window), the crop windows, the resize skipped where it is the identity, normalize's
[W, 3] constants.  On real CIFAR-10 JPEGs upscaled and re-encoded the ways images come."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import first_train_jpegs
from noisy_student_tf.data import preprocessing
from noisy_student_tf.model_dir import RESIZE_METHODS, InputConvention

CONV = InputConvention()


@pytest.fixture(scope='module')
def upscaled():
  """Three real CIFAR-10 train images upscaled (bicubic) to 256 x 256, 256 x 301, 203 x 256."""
  images = [tf.io.decode_jpeg(jpeg, channels=3) for jpeg in first_train_jpegs(3)]
  out = []
  for image, size in zip(images, ((256, 256), (256, 301), (203, 256))):
    big = tf.image.resize(tf.cast(image, tf.float32), size, 'bicubic')
    out.append(tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy())
  return out


def _pil_jpeg(image, **options):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, 'JPEG', quality=90, **options)
  return buffer.getvalue()


def _encodings(image):
  """name -> encoded bytes: baseline 4:2:0 (TensorFlow's encoder), baseline 4:4:4 / 4:2:2,
  progressive 4:2:0 / 4:2:2, progressive grayscale, optimised Huffman tables, and PNG."""
  return {
      'tf 4:2:0': tf.io.encode_jpeg(image, quality=95).numpy(),
      'tf 4:4:4': tf.io.encode_jpeg(image, quality=75, chroma_downsampling=False).numpy(),
      'pil 4:2:2': _pil_jpeg(image, subsampling=1),
      'pil progressive 4:2:0': _pil_jpeg(image, progressive=True, subsampling=2),
      'pil progressive 4:2:2': _pil_jpeg(image, progressive=True, subsampling=1),
      'pil progressive gray': _pil_jpeg(np.ascontiguousarray(image[..., 0]), progressive=True),
      'pil optimized': _pil_jpeg(image, optimize=True),
      'png': tf.io.encode_png(image).numpy(),
  }


def _window(top, left, height, width):
  return lambda h, w: tuple(tf.constant(v, tf.int32) for v in (top, left, height, width))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)] + [tf.TensorSpec([], tf.int32)] * 4)
def _decode_window(encoded, top, left, height, width):
  return preprocessing.decode_window(encoded, lambda h, w: (top, left, height, width))


def test_decode_window_gives_the_decoded_pixels_for_every_format_and_window(upscaled):
  rng = np.random.RandomState(0)
  for image in upscaled:
    for name, encoded in _encodings(image).items():
      whole = preprocessing.decode(encoded).numpy()
      h, w = whole.shape[:2]
      # every first row (the rows above it are skipped), and random windows: edges included
      windows = [(top, (top * 7) % (w // 2), h - top, w // 2) for top in range(h)]
      windows += [(0, 0, h, w), (h - 1, w - 1, 1, 1)]
      for _ in range(40):
        ch, cw = rng.randint(1, h + 1), rng.randint(1, w + 1)
        windows.append((rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1), ch, cw))
      for top, left, ch, cw in windows:
        got = _decode_window(encoded, top, left, ch, cw).numpy()
        np.testing.assert_array_equal(got, whole[top:top + ch, left:left + cw],
                                      err_msg=f'{name} {image.shape} {(top, left, ch, cw)}')


def test_decode_window_rejects_what_decode_rejects(upscaled):
  """Corrupt data below the window: the rows are decoded to the last one, so the error stays."""
  encoded = tf.io.encode_jpeg(upscaled[0], quality=95).numpy()
  n = len(encoded)
  rng = np.random.RandomState(1)
  broken = [encoded[:int(n * f)] for f in (0.3, 0.9, 0.99)]  # truncated
  broken += [encoded[:int(n * f)] + bytes(rng.randint(0, 256, 200).astype(np.uint8)) +
             encoded[int(n * f) + 200:] for f in (0.3, 0.6, 0.9)]  # garbage in the scan
  seen_error = 0
  for data in broken:
    try:
      preprocessing.decode(data)
      decodes = True
    except tf.errors.InvalidArgumentError:
      decodes = False
    seen_error += not decodes
    for window in ((0, 0, 40, 40), (10, 30, 100, 120), (200, 200, 56, 56)):
      if decodes:
        preprocessing.decode_window(data, _window(*window))
      else:
        with pytest.raises(tf.errors.InvalidArgumentError):
          preprocessing.decode_window(data, _window(*window))
  assert seen_error >= 4
  with pytest.raises(tf.errors.InvalidArgumentError, match='image too large'):
    preprocessing.decode_window(encoded, _window(0, 0, 8, 8), max_image_pixels=1000)


def test_eval_crop_and_train_preprocess_decode_only_the_window_with_the_same_result(
    upscaled, monkeypatch):
  for image in upscaled:
    for name in ('tf 4:2:0', 'pil progressive 4:2:2', 'png'):
      encoded = _encodings(image)[name]
      whole = preprocessing.decode(encoded)
      for resolution in (224, 200, 64):
        for convention in (CONV, InputConvention(resize_method='bicubic_tf1')):
          np.testing.assert_array_equal(
              preprocessing.eval_crop(encoded, resolution, convention).numpy(),
              preprocessing.center_crop(whole, resolution, convention).numpy())
  # training: the window of the decoded image, resized.  The window is fixed (eager random ops
  # keep their state across tf.random.set_seed, so two seeded draws would differ).
  encoded = _encodings(upscaled[1])['tf 4:2:0']
  whole = preprocessing.decode(encoded)
  for window in ((0, 0, 256, 301), (17, 40, 224, 224), (101, 3, 150, 190), (255, 300, 1, 1)):
    monkeypatch.setattr(preprocessing, 'random_crop_window',
                        lambda h, w, r, c, seed=None, window=window: tuple(
                            tf.constant(v, tf.int32) for v in window))
    got = preprocessing.train_preprocess(encoded, 224, CONV, flip=False)
    want = preprocessing.normalize(preprocessing.random_resized_crop(whole, 224, CONV), CONV)
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=str(window))


def test_random_crop_window_is_sample_distorted_bounding_box_with_the_center_fallback():
  for seed in range(6):
    for height, width in ((256, 256), (256, 301), (40, 300)):
      # each draw in a new function: a fresh kernel (eager kernels keep their random state)
      tf.random.set_seed(seed)
      got = [int(v) for v in tf.function(lambda: preprocessing.random_crop_window(
          height, width, 224, CONV, seed=3))()]
      tf.random.set_seed(seed)
      begin, size, _ = tf.function(lambda: tf.image.sample_distorted_bounding_box(
          [height, width, 3], tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
          min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
          max_attempts=10, use_image_if_no_bounding_boxes=True, seed=3))()
      want = [int(begin[0]), int(begin[1]), int(size[0]), int(size[1])]
      if want[2:] == [height, width]:  # every attempt failed: the evaluation crop
        want = [int(v) for v in preprocessing.center_crop_window(height, width, 224, CONV)]
      assert got == want
  # in a 10 x 300 strip no box of aspect 3/4-4/3 (at most 10 x 13) covers 8% of the area:
  # always the center crop
  side = int(224 / 256 * 10)
  for _ in range(5):
    assert [int(v) for v in preprocessing.random_crop_window(10, 300, 224, CONV)] == [
        (10 - side + 1) // 2, (300 - side + 1) // 2, side, side]


@pytest.mark.parametrize('method', RESIZE_METHODS)
def test_resize_shortcuts_keep_the_kernels_result(method):
  """Skipping a same-size resize, and not clipping convex methods, change nothing."""
  convention = InputConvention(resize_method=method)
  rng = np.random.RandomState(2)
  for shape, size in (((224, 224, 3), 224), ((31, 31, 3), 31), ((50, 70, 3), 224),
                      ((300, 260, 3), 224)):
    image = rng.randint(0, 256, shape).astype(np.uint8)
    image[:5] = 255  # saturated rows: where an interpolation could overshoot
    image[-5:] = 0
    want = np.round(np.clip(preprocessing.resize_float(image, size, convention).numpy(),
                            0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(preprocessing._resize(tf.constant(image), size,
                                                        convention).numpy(), want)
    dynamic = tf.function(lambda x: preprocessing._resize(x, size, convention),
                          input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(dynamic(tf.constant(image)).numpy(), want)


def test_normalize_with_laid_out_constants_is_the_per_channel_formula():
  rng = np.random.RandomState(3)
  mean, std = np.array(CONV.mean, np.float32), np.array(CONV.std, np.float32)
  for shape in ((3,), (7, 3), (5, 9, 3), (2, 4, 6, 3), (224, 224, 3), (330, 320, 3)):
    x = rng.randint(0, 256, shape).astype(np.uint8)
    got = preprocessing.normalize(x, CONV).numpy()
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, (x.astype(np.float32) - mean) / std)
  # width unknown, in a tf.data map as the pipelines run it (a tf.function's graph optimiser
  # would turn the division into a product with 1 / std, whatever normalize does)
  x = rng.randint(0, 256, (4, 5, 3)).astype(np.uint8)
  unknown = tf.data.Dataset.from_generator(
      lambda: iter([x]), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  got = next(iter(unknown.map(lambda image: preprocessing.normalize(image, CONV)))).numpy()
  np.testing.assert_array_equal(got, (x.astype(np.float32) - mean) / std)
