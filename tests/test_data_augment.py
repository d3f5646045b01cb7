"""RandAugment noise: every official op at levels 0-30 against its semantics written out in numpy
here (from google-research/noisystudent randaugment.py), on real CIFAR-10 images, and the
policy (one op per layer, uniform, random sign) in tf.data.  Reference outputs of the official
code itself are in test_augment_official.py."""

import tarfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import CIFAR10_TAR
from noisy_student_tf.data import augment

LEVELS = (0, 1, 5, 10, 15, 20, 27, 30)
F32 = np.float32


@pytest.fixture(scope='module')
def real_images():
  """Four real CIFAR-10 train images (first of four classes) and a 224 px bicubic upscale."""
  if not CIFAR10_TAR.exists():
    pytest.fail(f'{CIFAR10_TAR} not found; set NS_CIFAR10_TAR to cifar10-jpeg.tar.gz')
  wanted = {'airplane', 'cat', 'frog', 'truck'}
  found = {}
  with tarfile.open(CIFAR10_TAR) as tar:
    for member in tar:
      parts = member.name.split('/')
      if member.isfile() and len(parts) >= 3 and parts[-3] == 'train' and parts[-2] in wanted \
          and parts[-2] not in found:
        found[parts[-2]] = tf.io.decode_jpeg(tar.extractfile(member).read(), channels=3).numpy()
        if len(found) == len(wanted):
          break
  small = [found[k] for k in sorted(found)]
  big = tf.image.resize(tf.cast(small[1], tf.float32), [224, 224], 'bicubic')
  big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
  return small + [big]


# --- the official semantics, in numpy ------------------------------------------------------------

def np_blend(a, b, factor):
  if factor == 0.0:
    return a.astype(np.uint8)
  if factor == 1.0:
    return b.astype(np.uint8)
  a, b = a.astype(F32), b.astype(F32)
  return np.clip(a + F32(factor) * (b - a), 0, 255).astype(np.uint8)


def np_autocontrast(img):
  out = img.copy()
  for c in range(3):
    ch = img[..., c]
    lo, hi = F32(ch.min()), F32(ch.max())
    if hi > lo:
      scale = F32(255.0) / (hi - lo)
      offset = -lo * scale
      out[..., c] = np.clip(ch.astype(F32) * scale + offset, 0, 255).astype(np.uint8)
  return out


def np_equalize(img):
  out = img.copy()
  for c in range(3):
    ch = img[..., c].astype(np.int64)
    hist = np.bincount(ch.ravel(), minlength=256)
    used = hist[hist > 0]
    step = (used.sum() - used[-1]) // 255
    if step == 0:
      continue
    lut = (np.cumsum(hist) + step // 2) // step
    lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
    out[..., c] = lut[ch]
  return out


def np_posterize(img, bits):
  shift = min((8 - bits) % 256, 7)  # uint8 conversion of 8 - bits, kernel clamps to 7
  return ((img >> shift) << shift).astype(np.uint8)


def np_solarize(img, threshold):
  t = threshold % 256  # the Python int converted to uint8
  return np.where(img < t, img, 255 - img).astype(np.uint8)


def np_solarize_add(img, addition):
  added = np.clip(img.astype(np.int64) + addition, 0, 255).astype(np.uint8)
  return np.where(img < 128, added, img)


def np_gray(img):
  """tf.image.rgb_to_grayscale on uint8: to float (x / 255), weights 0.2989 0.587 0.114,
  back with x * 255.5 truncated."""
  x = img.astype(F32) * F32(1.0 / 255)
  w = np.array([0.2989, 0.5870, 0.1140], F32)
  gray = (x[..., 0] * w[0] + x[..., 1] * w[1]) + x[..., 2] * w[2]
  return (gray * F32(255.5)).astype(np.uint8)[..., None]


def np_color(img, factor):
  return np_blend(np.broadcast_to(np_gray(img), img.shape), img, factor)


def np_contrast(img, factor):
  h, w = img.shape[:2]
  mean = min(h * w // 256, 255)  # sum(256-bin histogram) / 256, truncated: pixel count / 256
  return np_blend(np.full(img.shape, mean, np.uint8), img, factor)


def np_brightness(img, factor):
  return np_blend(np.zeros_like(img), img, factor)


def np_sharpness(img, factor):
  """PIL SMOOTH kernel / 13 in float32, products summed row by row (TensorFlow's plain
  depthwise convolution), truncated; border pixels kept; then blend."""
  k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], F32) / F32(13)
  x = img.astype(F32)
  h, w = img.shape[:2]
  acc = None
  for dy in range(3):
    for dx in range(3):
      term = x[dy:h - 2 + dy, dx:w - 2 + dx] * k[dy, dx]
      acc = term if acc is None else acc + term
  degenerate = img.copy()
  degenerate[1:-1, 1:-1] = np.clip(acc, 0, 255).astype(np.uint8)
  return np_blend(degenerate, img, factor)


def np_project(img, t):
  """contrib.image.transform + wrap/unwrap: output (x, y) samples input
  ((t0 x + t1 y + t2) / k, (t3 x + t4 y + t5) / k), k = t6 x + t7 y + 1 (float32), nearest
  (round half away from zero); outside the image: 128."""
  t = np.asarray(t, F32)
  h, w = img.shape[:2]
  y, x = np.mgrid[0:h, 0:w].astype(F32)
  k = t[6] * x + t[7] * y + F32(1)
  ix = (t[0] * x + t[1] * y + t[2]) / k
  iy = (t[3] * x + t[4] * y + t[5]) / k
  ix = np.where(ix >= 0, np.floor(ix + 0.5), np.ceil(ix - 0.5)).astype(np.int64)
  iy = np.where(iy >= 0, np.floor(iy + 0.5), np.ceil(iy - 0.5)).astype(np.int64)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  out = np.full_like(img, 128)
  out[inside] = img[iy[inside], ix[inside]]
  return out


def np_rotation(degrees, h, w):
  rad = F32(degrees) * F32(np.pi / 180.0)
  cos, sin = np.cos(rad), np.sin(rad)
  hf, wf = F32(h), F32(w)
  x_off = ((wf - 1) - (cos * (wf - 1) - sin * (hf - 1))) / F32(2)
  y_off = ((hf - 1) - (sin * (wf - 1) + cos * (hf - 1))) / F32(2)
  return [cos, -sin, x_off, sin, cos, y_off, 0, 0]


def np_cutout(img, pad, cy, cx):
  out = img.copy()
  h, w = img.shape[:2]
  out[max(0, cy - pad):min(h, cy + pad), max(0, cx - pad):min(w, cx + pad)] = 128
  return out


def np_op(name, img, level, negate=False, translate_const=100, cutout_const=40, center=None):
  """The official op `name` at `level` in numpy (sign applied to the signed ops)."""
  f = level / 10.0
  sign = -1.0 if negate else 1.0
  enhance = f * 1.8 + 0.1
  h, w = img.shape[:2]
  if name == 'AutoContrast':
    return np_autocontrast(img)
  if name == 'Equalize':
    return np_equalize(img)
  if name == 'Invert':
    return 255 - img
  if name == 'Posterize':
    return np_posterize(img, int(f * 4))
  if name == 'Solarize':
    return np_solarize(img, int(f * 256))
  if name == 'SolarizeAdd':
    return np_solarize_add(img, int(f * 110))
  if name == 'Color':
    return np_color(img, enhance)
  if name == 'Contrast':
    return np_contrast(img, enhance)
  if name == 'Brightness':
    return np_brightness(img, enhance)
  if name == 'Sharpness':
    return np_sharpness(img, enhance)
  if name == 'Rotate':
    return np_project(img, np_rotation(sign * f * 30.0, h, w))
  if name == 'ShearX':
    return np_project(img, [1, sign * f * 0.3, 0, 0, 1, 0, 0, 0])
  if name == 'ShearY':
    return np_project(img, [1, 0, 0, sign * f * 0.3, 1, 0, 0, 0])
  if name == 'TranslateX':
    return np_project(img, [1, 0, sign * f * translate_const, 0, 1, 0, 0, 0])
  if name == 'TranslateY':
    return np_project(img, [1, 0, 0, 0, 1, sign * f * translate_const, 0, 0])
  if name == 'Cutout':
    return np_cutout(img, int(f * cutout_const), *center)
  raise KeyError(name)


# --- the ops -------------------------------------------------------------------------------------

def test_official_arguments_at_m27():
  a = augment.op_arguments(27)
  assert a['Rotate'] == pytest.approx(81.0)
  assert a['ShearX'] == pytest.approx(0.81)
  assert a['Color'] == pytest.approx(4.96) and a['Brightness'] == pytest.approx(4.96)
  assert (a['Posterize'], a['Solarize'], a['SolarizeAdd'], a['Cutout']) == (10, 691, 297, 108)
  assert a['TranslateX'] == pytest.approx(270.0)
  assert augment.op_arguments(5)['Posterize'] == 2
  assert augment.op_arguments(5)['Color'] == 1.0  # the enhance ops are the identity at M = 5


def test_posterize_and_solarize_wrap_above_level_10_as_officially():
  probe = tf.constant([[[100, 180, 250]]], tf.uint8)
  ops27 = augment.build_ops(27)
  # M = 27: 10 bits -> shift 8 - 10 = -2 -> uint8 254 -> clamped 7: one bit left
  assert augment.posterize_shift(10) == 7
  assert ops27['Posterize'](probe).numpy().ravel().tolist() == [0, 128, 128]
  # M = 27: threshold 691 -> 691 % 256 = 179
  assert augment.solarize_threshold(691) == 179
  assert ops27['Solarize'](probe).numpy().ravel().tolist() == [100, 75, 5]
  for m in (10, 20, 30):  # thresholds 256, 512, 768 -> 0: a full invert
    assert augment.build_ops(m)['Solarize'](probe).numpy().ravel().tolist() == [155, 75, 5]
  assert augment.build_ops(0)['Posterize'](probe).numpy().ravel().tolist() == [0, 128, 128]
  assert augment.build_ops(20)['Posterize'](probe).numpy().ravel().tolist() == [100, 180, 250]
  # the clamped variant, on request only
  clamped = augment.build_ops(27, wrap_levels=False)
  assert clamped['Posterize'](probe).numpy().ravel().tolist() == [100, 180, 250]
  assert clamped['Solarize'](probe).numpy().ravel().tolist() == [100, 180, 250]


@pytest.mark.parametrize('name', [n for n in augment.OP_NAMES
                                  if n not in augment.SIGNED_OPS and n != 'Cutout'])
def test_colour_and_integer_ops_are_bit_exact_at_every_level(name, real_images):
  for level in LEVELS:
    op = augment.build_ops(level)[name]
    for img in real_images:
      got = op(tf.constant(img)).numpy()
      want = np_op(name, img, level)
      assert got.dtype == np.uint8
      np.testing.assert_array_equal(got, want, err_msg=f'{name} level {level} {img.shape}')


@pytest.mark.parametrize('name', sorted(augment.SIGNED_OPS))
def test_geometric_ops_sample_nearest_and_fill_128(name, real_images):
  for level in LEVELS:
    for img in real_images:
      const = 100 if img.shape[0] > 32 else img.shape[0] // 8
      op = augment.build_ops(level, translate_const=const)[name]
      for negate in (False, True):
        got = op(tf.constant(img), negate=negate).numpy()
        want = np_op(name, img, level, negate, translate_const=const)
        np.testing.assert_array_equal(got, want,
                                      err_msg=f'{name} level {level} negate {negate}')


def test_translation_at_a_rounding_tie_and_of_unknown_size_uses_the_transform(real_images):
  img = real_images[2]
  # x - 2.5 rounds half away from zero: columns 0-2 shift by -3, the rest by -2 (no single
  # integer shift), so the kernel's own sampling is used
  assert augment.integer_shift(-2.5, 32) is None and augment.integer_shift(2.5, 32) == 3
  for pixels in (-2.5, 2.5, 10.8):
    np.testing.assert_array_equal(augment.translate_x(tf.constant(img), pixels).numpy(),
                                  np_project(img, [1, 0, pixels, 0, 1, 0, 0, 0]))
    dynamic = tf.function(lambda x, p=pixels: augment.translate_y(x, p),
                          input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(dynamic(tf.constant(img)).numpy(),
                                  np_project(img, [1, 0, 0, 0, 1, pixels, 0, 0]))


def test_cutout_square_is_clipped_to_the_image_and_filled_with_128(real_images):
  img = real_images[0]
  for level in LEVELS:
    for consts in (40, 4):
      op = augment.build_ops(level, cutout_const=consts)['Cutout']
      for center in ((5, 11), (0, 31), (31, 0), (16, 16)):
        got = op(tf.constant(img), center=tf.constant(center)).numpy()
        np.testing.assert_array_equal(
            got, np_op('Cutout', img, level, cutout_const=consts, center=center))


# --- the policy ----------------------------------------------------------------------------------

def _branch_outputs(img, magnitude):
  ops = augment.build_ops(magnitude)
  outs = {}
  for name in augment.OP_NAMES:
    if name == 'Cutout':
      continue
    for negate in ((False, True) if name in augment.SIGNED_OPS else (False,)):
      outs[(name, negate)] = ops[name](tf.constant(img), negate=negate).numpy()
  return outs


def _identify(out, img, outs):
  for key, ref in outs.items():
    if np.array_equal(out, ref):
      return key
  changed = (out != img).any(-1)
  if changed.any() and (out[changed] == 128).all():
    rows, cols = np.nonzero(changed)
    if changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all():
      return ('Cutout', False)
  return None


def test_one_uniform_op_per_layer_with_both_signs_in_tf_data(real_images):
  img = real_images[1]
  outs = _branch_outputs(img, 3)
  assert len({o.tobytes() for o in outs.values()}) == len(outs)  # all 20 outputs distinct
  aug = augment.make_randaugment(1, 3, 32, seed=7)
  ds = tf.data.Dataset.from_tensors(img).repeat(320).map(aug)
  counts = {}
  for out in ds.as_numpy_iterator():
    key = _identify(out, img, outs)
    assert key is not None
    counts[key] = counts.get(key, 0) + 1
  per_op = {}
  for (name, _), n in counts.items():
    per_op[name] = per_op.get(name, 0) + n
  assert set(per_op) == set(augment.OP_NAMES)
  assert all(8 <= n <= 40 for n in per_op.values()), per_op  # 20 expected each
  for name in augment.SIGNED_OPS:
    assert counts.get((name, False), 0) >= 3 and counts.get((name, True), 0) >= 3, counts


def test_randaugment_m27_runs_in_tf_data_and_keeps_uint8(real_images):
  aug = augment.make_randaugment(2, 27, 32)
  assert augment.make_randaugment(0, 27, 32) is None
  with pytest.raises(ValueError, match='randaug_layers'):
    augment.make_randaugment(-1, 10, 32)
  with pytest.raises(ValueError, match='randaug_magnitude'):
    augment.make_randaugment(2, -1, 32)
  img = real_images[0]
  ds = tf.data.Dataset.from_tensors(img).repeat(24).map(aug, num_parallel_calls=2)
  outs = list(ds.as_numpy_iterator())
  assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
  assert sum(not np.array_equal(o, img) for o in outs) >= 20
  assert len({o.tobytes() for o in outs}) > 12
  # an image of unknown static shape (as after a tf.cond) gets the [R, R, 3] it must have
  fn = tf.function(aug, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  assert fn(tf.constant(img)).shape == (32, 32, 3)
  big = augment.make_randaugment(2, 27, 224)
  assert big(tf.constant(real_images[-1])).shape == (224, 224, 3)


def test_seeded_randaugment_is_reproducible(real_images):
  img = real_images[2]

  def run(seed):
    aug = augment.make_randaugment(2, 15, 32, seed=seed)
    ds = tf.data.Dataset.from_tensors(img).repeat(12).map(aug)
    return [o.tobytes() for o in ds.as_numpy_iterator()]

  first = run(3)
  assert run(3) == first
  assert run(4) != first
  a = augment.make_randaugment(2, 15, 32, seed=5)(tf.constant(img)).numpy()
  b = augment.make_randaugment(2, 15, 32, seed=5)(tf.constant(img)).numpy()
  np.testing.assert_array_equal(a, b)


def test_small_image_recipe_ends_with_a_half_size_cutout(real_images):
  img = real_images[3]
  aug = augment.make_randaugment(1, 5, 32, small_image=True, seed=1)
  ds = tf.data.Dataset.from_tensors(img).repeat(16).map(aug)
  for out in ds.as_numpy_iterator():
    # rows/columns [c - 8, c + 8) clipped: at least an 8 x 8 gray square
    assert (out == 128).all(-1).sum() >= 64


def test_every_op_gives_the_same_bytes_in_a_tf_function(real_images):
  """Grappler rewrites graphs (it turned Sharpness' chain of float32 adds into an AddN, whose
  inputs it sorts by name: another order of additions, other truncated bytes); the ops must give
  their eager bytes inside tf.function too, on static shapes (what Grappler folds) and dynamic."""
  big = tf.constant(real_images[-1])
  center = tf.constant([100, 60], tf.int32)
  for level in (9, 27):
    ops = augment.build_ops(level)
    for name in augment.OP_NAMES:
      for negate in ((False, True) if name in augment.SIGNED_OPS else (False,)):
        op = lambda image, o=ops[name], n=negate: o(image, negate=n, center=center)
        want = op(big).numpy()
        static = tf.function(op, autograph=False)
        dynamic = tf.function(op, autograph=False,
                              input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        for kind, fn in (('static', static), ('dynamic', dynamic)):
          np.testing.assert_array_equal(fn(big).numpy(), want,
                                        err_msg=f'{name} level {level} negate {negate} {kind}')
