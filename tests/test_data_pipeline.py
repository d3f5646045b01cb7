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


def test_unlabeled_folder_with_one_percent_corrupt_is_read_to_the_end(cifar10_small, tmp_path):
  folder, broken = _corrupt_folder(cifar10_small, tmp_path)
  s = sources.as_unlabeled(sources.open_source(f'folder:{folder}'))
  counter = pipeline.CorruptCounter()
  ds = pipeline.make_eval_dataset(s, batch_size=32, resolution=32, convention=CONV,
                                  small_image=True, skip_corrupt=True, corrupt_counter=counter)
  ids = [i.decode() for b in ds.as_numpy_iterator() for i in b['source_id']]
  assert counter.count == 2 and ds.corrupt_counter is counter
  assert sorted(counter.source_ids) == sorted(broken)
  assert len(ids) == 198 and not set(ids) & set(broken)
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
