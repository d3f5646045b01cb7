"""RandAugment on whole batches (data/batch_augment.py, randaug_on='accelerator'): every op equals
augment.py's per-image op, and the batch policy draws the per-image pipeline's op distribution,
each image independently."""


import numpy as np
import pytest
import tensorflow as tf

from conftest import first_train_jpegs
from noisy_student_tf.data import augment
from noisy_student_tf.data import batch_augment as ba
from noisy_student_tf import model_dir as model_dir_lib

BRANCHES = ba.branches()


@pytest.fixture(scope='module')
def real_images():
  """uint8 [6, 32, 32, 3]: the first six real CIFAR-10 train images of the archive."""
  return np.stack([tf.io.decode_jpeg(jpeg, channels=3).numpy() for jpeg in first_train_jpegs(6)])


def _per_image(images, branch, centers, level, **consts):
  """augment.py's op of every image's branch, image by image."""
  ops = augment.build_ops(level, **consts)
  out = []
  for image, b, center in zip(images, branch, centers):
    name, negate = BRANCHES[b]
    out.append(ops[name](tf.constant(image), negate, tf.constant(center)).numpy())
  return np.stack(out)


@pytest.mark.parametrize('level,consts', [(3, dict(translate_const=4, cutout_const=4)),
                                          (27, dict(translate_const=4, cutout_const=4)),
                                          (10, {})])
def test_every_op_equals_the_per_image_op(real_images, level, consts):
  """All 21 (op, sign) branches at a level, both selections: bit-exact with augment.py."""
  rng = np.random.default_rng(level)
  n = len(real_images)
  for selection in ba.SELECTIONS:
    ops = ba.make_batch_ops(level, 32, selection=selection, **consts)
    for k, (name, negate) in enumerate(BRANCHES):
      centers = rng.integers(0, 32, size=(n, 2)).astype(np.int32)
      got = ops(tf.constant(real_images), tf.fill([n], k), tf.constant(centers)).numpy()
      want = _per_image(real_images, [k] * n, centers, level, **consts)
      assert np.array_equal(got, want), (selection, name, negate)


def test_mixed_ops_in_one_batch_at_224px(real_images):
  """One batch, every image its own branch (all 21 present), at 224 px with the ImageNet
  constants: each image as augment.py's op of its branch; an empty selection is harmless."""
  big = tf.image.resize(tf.cast(real_images, tf.float32), [224, 224], 'bicubic')
  big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
  images = np.concatenate([big] * 4)[:len(BRANCHES)]
  branch = np.random.default_rng(1).permutation(len(BRANCHES)).astype(np.int32)
  centers = np.random.default_rng(2).integers(0, 224, size=(len(images), 2)).astype(np.int32)
  want = _per_image(images, branch, centers, 27)
  for selection in ba.SELECTIONS:
    got = ba.make_batch_ops(27, 224, selection=selection)(
        tf.constant(images), tf.constant(branch), tf.constant(centers)).numpy()
    assert np.array_equal(got, want), selection
  empty = ba.make_batch_ops(27, 32)(tf.zeros([0, 32, 32, 3], tf.uint8), tf.zeros([0], tf.int32),
                                    tf.zeros([0, 2], tf.int32))
  assert empty.shape == (0, 32, 32, 3)


def test_policy_is_the_drawn_ops_in_sequence(real_images):
  """make_batch_randaugment(2, 27, small_image) on a batch = per image augment.py's two drawn
  ops in turn and the extra Cutout, with `draw`'s draws for that seed; both selections give
  the same batch."""
  images = np.concatenate([real_images] * 4)
  seed = tf.constant([3, 4], tf.int64)
  branch, centers = (t.numpy() for t in ba.draw(len(images), 2, 32, seed))
  want = images
  consts = dict(translate_const=4, cutout_const=4)
  for layer in range(2):
    want = _per_image(want, branch[:, layer], centers[:, layer], 27, **consts)
  want = np.stack([augment.cutout(tf.constant(im), 8, c).numpy()
                   for im, c in zip(want, centers[:, 2])])
  for selection in ba.SELECTIONS:
    fn = ba.make_batch_randaugment(2, 27, 32, small_image=True, selection=selection)
    assert np.array_equal(fn(tf.constant(images), seed).numpy(), want), selection
  assert ba.make_batch_randaugment(0, 27, 32) is None
  with pytest.raises(ValueError, match='randaug_magnitude'):
    ba.make_batch_randaugment(2, -1, 32)
  with pytest.raises(ValueError, match='selection'):
    ba.make_batch_ops(27, 32, selection='select')


def _classify(outputs, base, level):
  """The branch index of every output of one RandAugment layer on `base` (64 px, ImageNet
  constants): the op whose result it equals; Cutout where only 128s were written."""
  ops = augment.build_ops(level)
  refs = {k: ops[name](tf.constant(base), negate).numpy()
          for k, (name, negate) in enumerate(BRANCHES) if name != 'Cutout'}
  flat = np.stack(list(refs.values())).reshape(len(refs), -1)
  assert len(np.unique(flat, axis=0)) == len(refs)          # every op tells itself apart
  assert not (flat == base.reshape(1, -1)).all(axis=1).any()
  cutout = BRANCHES.index(('Cutout', False))
  keys = np.array(list(refs))
  labels = []
  for out in outputs:
    same = (flat == out.reshape(1, -1)).all(axis=1)
    if same.any():
      labels.append(int(keys[same][0]))
    else:
      changed = out != base
      assert changed.any() and (out[changed] == augment.FILL).all(), 'not one of the ops'
      labels.append(cutout)
  return np.array(labels)


def _chi_square(counts, expected):
  return float(((counts - expected) ** 2 / expected).sum())


def test_op_frequencies_match_the_per_image_pipeline():
  """One layer at M=3 on 800 copies of one 64 px image, through the per-image tf.data
  pipeline and through one batch: each output's op identified from the pixels.  Both
  histograms fit the official distribution (1/16 per op, half of it per sign: chi-square, 20
  degrees of freedom, under the 0.1% critical value 45.3), and each other (two-sample)."""
  n, level = 800, 3
  base = np.random.default_rng(0).integers(30, 221, size=(64, 64, 3)).astype(np.uint8)
  tf.random.set_seed(11)
  per_image = augment.make_randaugment(1, level, 64)
  host = np.stack(list(tf.data.Dataset.from_tensors(tf.constant(base)).repeat(n)
                       .map(per_image).batch(n).as_numpy_iterator())[0])
  batch = ba.make_batch_randaugment(1, level, 64)(
      tf.constant(np.repeat(base[None], n, axis=0)), tf.constant([5, 6], tf.int64)).numpy()
  expected = np.array([0.5 if name in augment.SIGNED_OPS else 1.0 for name, _ in BRANCHES])
  expected = expected / expected.sum()
  counts = {}
  for name, outputs in (('host', host), ('batch', batch)):
    counts[name] = np.bincount(_classify(outputs, base, level), minlength=len(BRANCHES))
    assert _chi_square(counts[name], n * expected) < 45.3, (name, counts[name])
  pooled = (counts['host'] + counts['batch']) / 2
  two_sample = _chi_square(counts['host'], pooled) + _chi_square(counts['batch'], pooled)
  assert two_sample < 45.3, counts


def test_draws_are_independent_per_image_and_layer():
  """`draw` over 4096 images x 2 layers: every op about equally often, the ops of one image's
  two layers independent (16 x 16 contingency chi-square under the 0.1% critical value of 225
  degrees of freedom, 301), no correlation between neighbouring images, Cutout centres uniform
  over the image; and one batch of 64 holds many different ops."""
  n = 4096
  branch, centers = (t.numpy() for t in ba.draw(n, 2, 32, tf.constant([7, 8], tf.int64)))
  first = np.cumsum([0] + [2 if name in augment.SIGNED_OPS else 1 for name in augment.OP_NAMES])
  op = np.searchsorted(first, branch, side='right') - 1                  # branch -> op index
  assert _chi_square(np.bincount(op.ravel(), minlength=16), np.full(16, 2 * n / 16)) < 37.7
  table = np.zeros((16, 16))
  np.add.at(table, (op[:, 0], op[:, 1]), 1)
  expected = np.outer(table.sum(1), table.sum(0)) / n
  assert _chi_square(table, expected) < 301
  for layer in range(2):
    assert abs(np.corrcoef(op[:-1, layer], op[1:, layer])[0, 1]) < 0.06
  assert abs(np.corrcoef(centers[:, 0, 0], centers[:, 0, 1])[0, 1]) < 0.06
  assert centers.min() == 0 and centers.max() == 31
  assert len(np.unique(branch[:64, 0])) >= 12
  signed = np.isin(op, [augment.OP_NAMES.index(s) for s in augment.SIGNED_OPS])
  negated = branch - first[op] == 1
  assert 0.45 < negated[signed].mean() < 0.55


def test_batch_noise_crops_flips_and_normalises_small_images(real_images):
  """make_batch_noise for 32 px images: RandAugment, then per image a reflect-pad crop (offsets
  0..8, as preprocessing.small_image_crop) and a flip with probability 1/2, then normalize."""
  convention = model_dir_lib.InputConvention()
  images = np.concatenate([real_images] * 40)
  shifted = ba.crop_and_flip(tf.constant(images), 4, flip=True,
                             seed=tf.constant([1, 2], tf.int64)).numpy()
  padded = np.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]], mode='reflect')
  kinds = set()
  for out, pad in zip(shifted, padded):
    matches = [(oy, ox, f) for oy in range(9) for ox in range(9) for f in (0, 1)
               if np.array_equal(out, pad[oy:oy + 32, ox:ox + 32][:, ::-1 if f else 1])]
    assert matches, 'not a crop of the padded image'
    kinds.update(matches)
  assert {m[2] for m in kinds} == {0, 1}
  assert {m[0] for m in kinds} == set(range(9)) and {m[1] for m in kinds} == set(range(9))
  noise = ba.make_batch_noise(2, 9, 32, convention, small_image=True)
  out = noise(tf.constant(images), tf.constant([1, 2], tf.int64))
  assert out.dtype == tf.float32 and out.shape == images.shape
  same = noise(tf.constant(images), tf.constant([1, 2], tf.int64))
  assert np.array_equal(out.numpy(), same.numpy())
