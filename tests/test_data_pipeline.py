"""Pipelines: eval/label determinism, training noise, mixed-batch weights, corrupt images."""


import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import pipeline, preprocessing, records, sources
from noisy_student_tf.model_dir import InputConvention

CONV = InputConvention()
LOW = (0.0 - np.array(CONV.mean)) / np.array(CONV.std)
HIGH = (255.0 - np.array(CONV.mean)) / np.array(CONV.std)


def _check_range(images):
  images = np.asarray(images)
  assert images.dtype == np.float32
  assert (images >= LOW - 1e-5).all() and (images <= HIGH + 1e-5).all()


def test_eval_dataset_is_deterministic_in_order_with_contract_shapes(cifar10_small):
  s = sources.open_source(f'folder:{cifar10_small}/test')
  seen = []
  for _ in range(2):
    ds = pipeline.make_eval_dataset(s, batch_size=64, resolution=40, convention=CONV,
                                    keep_encoded=True)
    seen.append(list(ds.take(3).as_numpy_iterator()))
  b = seen[0][0]
  assert b['image'].shape == (64, 40, 40, 3) and b['label'].dtype == np.int64
  assert b['source_id'].shape == (64,) and b['encoded'].shape == (64,)
  _check_range(b['image'])
  for x, y in zip(*seen):
    np.testing.assert_array_equal(x['image'], y['image'])
    assert list(x['source_id']) == list(y['source_id'])
  ids = [i for batch in seen[0] for i in batch['source_id']]
  assert ids == [e['source_id'] for e in s.dataset.take(192).as_numpy_iterator()]
  # the SavedModel-friendly function gives the pipeline's image
  one = preprocessing.eval_preprocess(b['encoded'][0], 40, CONV)
  np.testing.assert_array_equal(one.numpy(), b['image'][0])


def test_eval_crop_uses_the_padding_ratio_and_handles_grayscale_and_odd_sizes():
  gray = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (48, 1, 1))  # 48x64, 1 channel
  crop = preprocessing.eval_crop(tf.io.encode_png(gray), 16, CONV).numpy()
  assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
  # central square of side 48 * 16 / 48 = 16 -> columns 24..39 of the ramp, unchanged by resize
  np.testing.assert_array_equal(crop[0, :, 0], np.arange(24, 40))
  assert (crop[..., 0] == crop[..., 2]).all()
  small = preprocessing.eval_crop(tf.io.encode_png(gray), 32, CONV, small_image=True)
  assert small.shape == (32, 32, 3)
  bicubic = InputConvention(resize_method='bicubic')
  noise = np.random.RandomState(0).randint(0, 2, (20, 20, 3)).astype(np.uint8) * 255
  up = preprocessing.eval_crop(tf.io.encode_png(noise), 64, bicubic).numpy()
  assert up.min() == 0 and up.max() == 255  # overshoot clipped, not wrapped


def _tf1_bicubic_reference(image, size):
  """TF1 resize_bicubic written out in numpy: source coordinate x * in / out in float32 (no
  half-pixel centres), cubic kernel with a = -0.75 at the distance rounded to 1/1024 (the kernel's
  1024-entry table), neighbours clamped at the border, float result."""
  def cubic(t, a=-0.75):
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))

  def weights(in_size, out_size):
    w = np.zeros((out_size, in_size))
    scale = np.float32(in_size) / np.float32(out_size)
    for o in range(out_size):
      x = np.float32(o) * scale
      base = int(np.floor(x))
      delta = np.round((x - base) * 1024) / 1024
      for k in range(-1, 3):
        w[o, min(max(base + k, 0), in_size - 1)] += cubic(delta - k)
    return w
  wy, wx = weights(image.shape[0], size), weights(image.shape[1], size)
  return np.einsum('oh,hwc,pw->opc', wy, image.astype(np.float64), wx)


def test_bicubic_tf1_matches_tf1_resize_bicubic_and_differs_from_tf2_bicubic():
  """Converted official checkpoints expect TF1's resize_bicubic (official preprocessing.py)."""
  rng = np.random.RandomState(1)
  image = rng.randint(0, 256, (37, 53, 3)).astype(np.uint8)
  tf1 = InputConvention(resize_method='bicubic_tf1')
  for size in (16, 29, 80):
    want = _tf1_bicubic_reference(image, size)
    got = preprocessing.resize_float(image, size, tf1).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)
    tf2 = preprocessing.resize_float(image, size, InputConvention(resize_method='bicubic')).numpy()
    assert np.abs(tf2 - want).max() > 5  # TF2 bicubic: half-pixel centres, a = -0.5
  # the evaluation crop: official offsets and side, then the same resize, clipped and rounded
  encoded = tf.io.encode_png(image)
  crop = preprocessing.eval_crop(encoded, 24, tf1).numpy()
  side = int(24 / (24 + 32) * 37)
  top, left = (37 - side + 1) // 2, (53 - side + 1) // 2
  want = _tf1_bicubic_reference(image[top:top + side, left:left + side], 24)
  np.testing.assert_array_equal(crop, np.round(np.clip(want, 0, 255)).astype(np.uint8))
  with pytest.raises(ValueError, match="resize_method must be one of .* got 'bicubc'"):
    InputConvention(resize_method='bicubc')


def test_image_transform_is_applied_before_normalisation():
  s = sources.open_source('digits:test')
  plain = next(iter(pipeline.make_eval_dataset(s, batch_size=4, resolution=16, convention=CONV)))
  inverted = next(iter(pipeline.make_eval_dataset(
      s, batch_size=4, resolution=16, convention=CONV, image_transform=lambda x: 255 - x)))
  std = np.array(CONV.std, np.float32)
  mean = np.array(CONV.mean, np.float32)
  np.testing.assert_allclose(inverted['image'].numpy() * std + mean,
                             255.0 - (plain['image'].numpy() * std + mean), atol=1e-3)


def test_train_preprocessing_is_random_and_in_range():
  s = sources.open_source('digits:test')
  encoded = next(iter(s.dataset))['encoded']
  for small in (False, True):
    a = preprocessing.train_preprocess(encoded, 32, CONV, small_image=small).numpy()
    outs = [preprocessing.train_preprocess(encoded, 32, CONV, small_image=small).numpy()
            for _ in range(5)]
    assert a.shape == (32, 32, 3)
    _check_range(a)
    assert any(not np.array_equal(a, o) for o in outs)


def _write_pseudo(tmp_path, n, num_classes, seed=0):
  rng = np.random.RandomState(seed)
  probs = rng.dirichlet(np.ones(num_classes) * 0.3, size=n).astype(np.float32)
  probs = 0.5 * probs / probs.max(1, keepdims=True) * 0.999  # every max < 0.5
  probs[:, 0] += 1.0 - probs.sum(1)  # rows sum to 1 (class 0 absorbs the rest)
  probs = np.clip(probs, 0, 1)
  images = rng.randint(0, 256, (n, 12, 12, 3)).astype(np.uint8)
  with records.PseudoLabelWriter(tmp_path, prefix='pl') as w:
    w.write_batch([tf.io.encode_png(im).numpy() for im in images],
                  [f'u{i}' for i in range(n)], probs)
  return sources.open_source(f'pseudo:{tmp_path}/pl-*.tfrecord')


def test_mixed_batch_weights_give_mean_ce_labeled_plus_mean_ce_pseudo(tmp_path):
  labeled = sources.open_source('digits:test')
  pseudo = _write_pseudo(tmp_path, 40, 10)
  b, ratio = 4, 1.5  # U = 6
  ds = pipeline.make_train_dataset(
      labeled, batch_size=b, resolution=16, num_classes=10, convention=CONV,
      randaug_layers=2, randaug_magnitude=27, label_smoothing=0.1, pseudo=pseudo,
      unlabeled_ratio=ratio, seed=1)
  images, targets, weights = [t.numpy() for t in next(iter(ds))]
  assert images.shape == (10, 16, 16, 3) and targets.shape == (10, 10) and weights.shape == (10,)
  _check_range(images)
  is_labeled = targets.max(1) > 0.9  # one-hot 0.91 after smoothing; pseudo maxima are < 0.9
  assert is_labeled.sum() == 4
  np.testing.assert_allclose(weights[is_labeled], 1 / 4)
  np.testing.assert_allclose(weights[~is_labeled], 1 / 6)
  np.testing.assert_allclose(np.sort(targets[is_labeled], 1)[:, -2:], [[0.01, 0.91]] * 4,
                             rtol=1e-5)
  assert not is_labeled[:4].all()  # rows are mixed, not labeled-first
  logits = np.random.RandomState(0).randn(10, 10).astype(np.float32)
  ce = tf.nn.softmax_cross_entropy_with_logits(targets, logits).numpy()
  np.testing.assert_allclose((weights * ce).sum(),
                             ce[is_labeled].mean() + ce[~is_labeled].mean(), rtol=1e-5)
  # without pseudo data: B rows, weights 1/B
  _, t, w = next(iter(pipeline.make_train_dataset(
      labeled, batch_size=b, resolution=16, num_classes=10, convention=CONV)))
  assert t.shape == (4, 10)
  np.testing.assert_allclose(w.numpy(), 0.25)


def test_hard_pseudo_labels_are_smoothed_and_soft_ones_kept(tmp_path):
  """As the official main.py: one-hot pseudo-labels get label smoothing, soft ones do not."""
  rng = np.random.RandomState(3)
  n, c = 24, 10
  soft = rng.dirichlet(np.ones(c), size=n // 2).astype(np.float32)
  hard = np.eye(c, dtype=np.float32)[rng.randint(0, c, n // 2)]
  images = rng.randint(0, 256, (n, 12, 12, 3)).astype(np.uint8)
  with records.PseudoLabelWriter(tmp_path, prefix='pl') as w:
    w.write_batch([tf.io.encode_png(im).numpy() for im in images],
                  [f'u{i}' for i in range(n)], np.concatenate([soft, hard]))
  pseudo = sources.open_source(f'pseudo:{tmp_path}/pl-*.tfrecord')
  labeled = sources.open_source('digits:test')

  def pseudo_targets(**kwargs):
    ds = pipeline.make_train_dataset(labeled, batch_size=4, resolution=12, num_classes=c,
                                     convention=CONV, label_smoothing=0.1, pseudo=pseudo,
                                     unlabeled_ratio=2, seed=5, **kwargs)
    rows = []
    for _, targets, weights in ds.take(6):
      rows.append(targets.numpy()[np.isclose(weights.numpy(), 1 / 8)])
    return np.concatenate(rows)

  smoothed = pseudo_targets(hard_pseudo_label_smoothing=0.2)
  is_hard = np.isclose(smoothed.max(1), 0.82)
  assert 10 <= is_hard.sum() <= 38 and (~is_hard).sum() >= 10  # both kinds seen
  np.testing.assert_allclose(np.sort(smoothed[is_hard], 1)[:, -2:], [[0.02, 0.82]] * is_hard.sum(),
                             rtol=1e-6)
  # soft rows are exactly one of the stored distributions
  for row in smoothed[~is_hard]:
    assert np.abs(soft - row).max(1).min() < 1e-6
  plain = pseudo_targets()  # the library default: no smoothing
  assert set(np.unique(plain[plain.max(1) == 1.0])) == {0.0, 1.0}
  with pytest.raises(ValueError, match='hard_pseudo_label_smoothing must be in'):
    pipeline.make_train_dataset(labeled, batch_size=4, resolution=12, num_classes=c,
                                convention=CONV, pseudo=pseudo, hard_pseudo_label_smoothing=1.0)


def test_train_config_smooths_hard_pseudo_labels_like_the_labeled_ones_unless_told():
  from noisy_student_tf.train import trainer
  base = dict(model_dir='/tmp/m', labeled='digits:train', train_steps=1)
  assert trainer.TrainConfig(**base, label_smoothing=0.1).hard_pseudo_label_smoothing() == 0.1
  assert trainer.TrainConfig(**base, label_smoothing=0.1,
                             pseudo_label_smoothing=0.0).hard_pseudo_label_smoothing() == 0.0
  with pytest.raises(ValueError, match='pseudo_label_smoothing must be in'):
    trainer.TrainConfig(**base, pseudo_label_smoothing=-0.5).validate()


def _corrupt_folder(cifar10_small, tmp_path, n=200, bad=(17, 123)):
  """n real CIFAR JPEGs in PATH/<class>/, with the files at positions `bad` truncated."""
  files = sorted((cifar10_small / 'train').glob('*/*.jpg'))[::10][:n]
  out = tmp_path / 'unlabeled'
  broken = []
  for i, f in enumerate(files):
    dst = out / f.parent.name / f.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = f.read_bytes()
    if i in bad:
      data = data[:len(data) // 3]
      broken.append(f'{f.parent.name}/{f.name}')
    dst.write_bytes(data)
  return out, broken


def test_unlabeled_folder_with_one_percent_corrupt_is_read_to_the_end(cifar10_small, tmp_path,
                                                                     monkeypatch):
  folder, broken = _corrupt_folder(cifar10_small, tmp_path)
  s = sources.as_unlabeled(sources.open_source(f'folder:{folder}'))
  counter = pipeline.CorruptCounter()
  ds = pipeline.make_eval_dataset(s, batch_size=32, resolution=32, convention=CONV,
                                  small_image=True, skip_corrupt=True, corrupt_counter=counter)
  batches = list(ds.as_numpy_iterator())
  ids = [i.decode() for b in batches for i in b['source_id']]
  assert counter.count == 2 and ds.corrupt_counter is counter
  assert sorted(counter.source_ids) == sorted(broken)
  assert len(ids) == 198 and not set(ids) & set(broken)
  # whole batches after the skipped images (the images are decoded in chunks)
  assert [len(b['source_id']) for b in batches] == [32] * 6 + [6]
  # batches larger than a decode chunk: the same images in the same order, still whole batches
  monkeypatch.setattr(pipeline, 'EVAL_CHUNK_PIXELS', 40 * 32 * 32)
  monkeypatch.setattr(pipeline, 'EVAL_CHUNK', 40)
  assert pipeline.eval_chunk_size(100, 32) == 40
  big = list(pipeline.make_eval_dataset(
      s, batch_size=100, resolution=32, convention=CONV, small_image=True, skip_corrupt=True,
      keep_encoded=True).as_numpy_iterator())
  assert [len(b['source_id']) for b in big] == [100, 98]
  assert [i.decode() for b in big for i in b['source_id']] == ids
  np.testing.assert_array_equal(np.concatenate([b['image'] for b in big]),
                                np.concatenate([b['image'] for b in batches]))
  # labeled, without skip_corrupt: the run fails naming the file
  labeled = sources.open_source(f'folder:{folder}')
  ds = pipeline.make_eval_dataset(labeled, batch_size=32, resolution=32, convention=CONV)
  with pytest.raises(tf.errors.InvalidArgumentError, match=broken[0].replace('/', '.')):
    for _ in ds:
      pass
  # the training pipeline skips and counts too
  train = pipeline.make_train_dataset(labeled, batch_size=50, resolution=32, num_classes=10,
                                      convention=CONV, small_image=True, skip_corrupt=True,
                                      shuffle_buffer=10)
  for _ in train.take(4):  # one pass over the 200 files
    pass
  assert train.corrupt_counter.count >= 2


def test_randaug_on_accelerator_leaves_uint8_crops_for_the_step():
  """randaug_on='accelerator': small images come out as the plain R x R uint8 images (no
  RandAugment, crop or flip: the step does them, batch_augment.make_batch_noise, then
  normalises); large images as the training crop, uint8."""
  from noisy_student_tf.data import batch_augment
  s = sources.open_source('digits:test')
  plain = {preprocessing.center_crop(preprocessing.decode(d['encoded'], None), 16, CONV,
                                     small_image=True).numpy().tobytes() for d in s.dataset}
  common = dict(batch_size=8, resolution=16, num_classes=10, convention=CONV, randaug_layers=2,
                randaug_magnitude=27, seed=1)
  images, _, _ = next(iter(pipeline.make_train_dataset(s, small_image=True,
                                                       randaug_on='accelerator', **common)))
  assert images.dtype == tf.uint8 and images.shape == (8, 16, 16, 3)
  assert all(image.tobytes() in plain for image in images.numpy())
  noise = batch_augment.make_batch_noise(2, 27, 16, CONV, small_image=True)
  _check_range(noise(images, tf.constant([0, 1], tf.int64)))
  large, _, _ = next(iter(pipeline.make_train_dataset(s, randaug_on='accelerator', **common)))
  assert large.dtype == tf.uint8 and large.shape == (8, 16, 16, 3)
  with pytest.raises(ValueError, match='randaug_on'):
    pipeline.make_train_dataset(s, randaug_on='device', **common)
