"""Robustness suites on real data: TFDS corruptions on CIFAR-10 test images for a trained tiny
model and its baseline, ImageNet-P flip rates on frame folders, and missing-dataset messages."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from noisy_student_tf import model_dir as mdl, models
from noisy_student_tf.evaluate import corruptions, robustness, suites

TRAIN_PER_CLASS = 100


def _load_folder(root, per_class):
  classes = sorted(os.listdir(root))
  xs, ys = [], []
  for i, c in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(root, c)))[:per_class]:
      xs.append(np.asarray(Image.open(os.path.join(root, c, f)).convert('RGB')))
      ys.append(i)
  return np.stack(xs), np.array(ys), classes


def tiny_model_dirs(tmp_path_factory, cifar10_small):
  """Trains (once per session, cached under the pytest base temp) a tiny CIFAR-10 model with
  plain Keras: returns (baseline dir after 1 epoch, model dir after 4 epochs)."""
  root = tmp_path_factory.getbasetemp() / 'robust_tiny'
  dirs = (str(root / 'baseline'), str(root / 'model'))
  if all(mdl.is_complete(d) for d in dirs):
    return dirs
  x, y, classes = _load_folder(cifar10_small / 'train', TRAIN_PER_CLASS)
  convention = mdl.InputConvention()
  x = (x.astype('float32') - np.float32(convention.mean)) / np.float32(convention.std)
  # BN momentum 0.9: with 0.99 the moving statistics are still mostly their initial values after
  # the ~80 steps trained here, and inference-mode predictions collapse to one class.
  config = models.make_config('b0', 10, bn_momentum=0.9, **TINY)
  keras.utils.set_random_seed(0)
  model = models.build_from_config(config)
  model.compile(keras.optimizers.Adam(3e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
  for d, epochs in zip(dirs, (1, 3)):
    model.fit(x, y, batch_size=50, epochs=epochs, shuffle=True, verbose=0)
    for which in ('ema', 'raw'):
      mdl.save_weights(d, model, which)
    mdl.write_config(d, mdl.ModelDirConfig(model=config, class_names=classes, input=convention))
  return dirs


@pytest.fixture(scope='module')
def trained(tmp_path_factory, cifar10_small):
  return tiny_model_dirs(tmp_path_factory, cifar10_small)


@pytest.fixture(scope='module')
def test_subset(cifar10_small, tmp_path_factory):
  """10 test images per class (100), as symlinked class folders."""
  out = tmp_path_factory.mktemp('robust_test_subset')
  for c in sorted(os.listdir(cifar10_small / 'test')):
    (out / c).mkdir()
    for f in sorted(os.listdir(cifar10_small / 'test' / c))[:10]:
      (out / c / f).symlink_to(cifar10_small / 'test' / c / f)
  return out


def test_corrupt_is_deterministic_per_image_and_keeps_shape():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)
  for name in ('gaussian_noise', 'impulse_noise', 'contrast', 'pixelate'):
    a = corruptions.corrupt(image, name, 3)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert (a == corruptions.corrupt(image, name, 3)).all()
    assert (a != image).any()
  noisy1 = corruptions.corrupt(image, 'gaussian_noise', 1)
  noisy5 = corruptions.corrupt(image, 'gaussian_noise', 5)
  diff = lambda a: np.abs(a.astype(int) - image).mean()  # noqa: E731
  assert diff(noisy5) > 2 * diff(noisy1)
  with pytest.raises(ValueError, match='severities must be integers in 1..5'):
    corruptions.check_corruptions(['contrast'], [0])
  with pytest.raises(ValueError, match="unknown corruption"):
    corruptions.check_corruptions(['rain'])


def test_corruption_status_names_what_is_missing():
  status = corruptions.corruption_status(frost_dir=None)
  assert set(status) == set(corruptions.ALL_CORRUPTIONS)
  # numpy-only corruptions always run
  assert status['gaussian_noise'] is None and status['contrast'] is None
  # snow and motion_blur blur in-process (evaluate/motion_blur.py): no ImageMagick needed
  assert status['snow'] is None and status['motion_blur'] is None


def test_corruptions_suite_model_vs_baseline(trained, test_subset, tmp_path):
  baseline, model = trained
  names = ('gaussian_noise', 'contrast')
  result = suites.run_suite('corruptions', model, output_dir=str(tmp_path),
                            eval_data=f'folder:{test_subset}', baseline_model_dir=baseline,
                            corruptions=names, batch_size=100)
  for ext in ('json', 'md', 'png'):
    assert (tmp_path / f'corruptions.{ext}').stat().st_size > 100
  assert result['files']['png'] == str(tmp_path / 'corruptions.png')
  saved = json.loads((tmp_path / 'corruptions.json').read_text())
  assert saved['corruptions'] == list(names) and saved['severities'] == [1, 2, 3, 4, 5]
  assert saved['num_examples'] == 100 and saved['model']['num_examples'] == 100
  m, b = saved['model'], saved['baseline']
  for name in names:
    assert len(m['errors'][name]) == 5 and len(b['errors'][name]) == 5
    expected = 100 * np.mean(m['errors'][name]) / np.mean(b['errors'][name])
    assert saved['ce_vs_baseline'][name] == pytest.approx(expected)
  assert saved['mce_vs_baseline'] == pytest.approx(np.mean(list(saved['ce_vs_baseline'].values())))
  # The trained model beats chance on clean images, and the strongest corruptions hurt it.
  assert m['clean']['top1'] > 0.15
  assert m['errors']['gaussian_noise'][4] > m['clean']['error']
  assert m['errors']['contrast'][4] > m['clean']['error']
  assert 0 <= m['clean']['ece'] <= 1
  table = (tmp_path / 'corruptions.md').read_text()
  assert 'gaussian_noise' in table and 'CE vs baseline' in table and '(mCE)' in table


def test_corruptions_suite_scores_more_model_dirs_on_the_same_images(trained, test_subset,
                                                                    tmp_path):
  """One pass scores a second student too: its results, in its own MODEL_DIR/robustness, are the
  ones it gets alone, and the model's are unchanged by it (the corrupted images are made once)."""
  baseline, model = trained
  other = str(tmp_path / 'other_model')
  shutil.copytree(baseline, other)  # the baseline's weights under another name
  common = dict(eval_data=f'folder:{test_subset}', baseline_model_dir=baseline,
                corruptions=('contrast', 'impulse_noise'), severities=(2, 5), batch_size=100)
  alone = suites.run_suite('corruptions', model, output_dir=str(tmp_path / 'alone'), **common)
  both = suites.run_suite('corruptions', model, output_dir=str(tmp_path / 'both'),
                          more_model_dirs=(other,), **common)
  assert both['model']['errors'] == alone['model']['errors']
  assert both['mce_vs_baseline'] == alone['mce_vs_baseline']
  saved = json.loads((tmp_path / 'other_model' / 'robustness' / 'corruptions.json').read_text())
  robust_dir = os.path.join(other, 'robustness')
  assert both['more'] == {other: {key: os.path.join(robust_dir, f'corruptions.{ext}') for key, ext
                                  in (('json', 'json'), ('markdown', 'md'), ('png', 'png'))}}
  assert saved['model_dir'] == other and saved['scored_with'] == [model, baseline]
  # Same weights as the baseline, same images: identical errors, every CE exactly 100.
  assert saved['model']['errors'] == both['baseline']['errors']
  assert saved['mce_vs_baseline'] == pytest.approx(100.0)
  assert saved['model']['errors'] != both['model']['errors']
  for ext in ('md', 'png'):
    assert (tmp_path / 'other_model' / 'robustness' / f'corruptions.{ext}').stat().st_size > 100
  with pytest.raises(ValueError, match='must differ'):
    suites.run_suite('corruptions', model, output_dir=str(tmp_path / 'x'),
                     more_model_dirs=(baseline,), **common)
  with pytest.raises(ValueError, match='corruptions suite only'):
    suites.run_suite('imagenet_a', model, output_dir=str(tmp_path / 'x'), more_model_dirs=(other,))
  assert not (tmp_path / 'x').exists()


def test_corruptions_suite_rejects_bad_input_before_work(trained, test_subset, tmp_path):
  _, model = trained
  with pytest.raises(ValueError, match='needs eval_data'):
    suites.run_suite('corruptions', model, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match='unknown suite'):
    suites.run_suite('imagenet_x', model, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match='severities'):
    suites.run_suite('corruptions', model, output_dir=str(tmp_path),
                     eval_data=f'folder:{test_subset}', corruptions=['contrast'], severities=[6])
  assert not os.listdir(tmp_path)


def test_missing_datasets_say_which_and_how(trained, tmp_path):
  _, model = trained
  empty = str(tmp_path / 'no_tfds')
  with pytest.raises(FileNotFoundError, match=r'ImageNet-A is not available.*tfds build imagenet_a'):
    suites.run_suite('imagenet_a', model, output_dir=str(tmp_path), data_dir=empty)
  with pytest.raises(FileNotFoundError, match=r'ImageNet-C is not available: tfds '
                     r'imagenet2012_corrupted/gaussian_noise_1.*zenodo'):
    suites.run_suite('imagenet_c', model, output_dir=str(tmp_path), data_dir=empty)
  with pytest.raises(FileNotFoundError, match=r'ImageNet-P is not available.*zenodo'):
    suites.run_suite('imagenet_p', model, output_dir=str(tmp_path),
                     imagenet_p_dir=str(tmp_path / 'nope'))


def test_imagenet_p_flip_rates_on_frame_folders(trained, test_subset, tmp_path):
  """A still sequence never flips; a noisy one against its first frame flips as often as the
  model's predictions on those frames differ from the clean one."""
  _, model = trained
  root = tmp_path / 'imagenet_p'
  classes = sorted(os.listdir(test_subset))
  clean = {c: np.asarray(Image.open(sorted((test_subset / c).iterdir())[0]).convert('RGB'))
           for c in classes[:3]}
  for c, img in clean.items():
    still = root / 'brightness' / c / 'seq0'
    noisy = root / 'gaussian_noise' / c / 'seq0'
    still.mkdir(parents=True)
    noisy.mkdir(parents=True)
    for j in range(6):
      Image.fromarray(img).save(still / f'{j:02d}.png')
      frame = img if j == 0 else corruptions.corrupt(img, 'gaussian_noise', 5, seed=j)
      Image.fromarray(frame).save(noisy / f'{j:02d}.png')
  result = suites.run_suite('imagenet_p', model, output_dir=str(tmp_path / 'out'),
                            imagenet_p_dir=str(root))
  assert result['flip_probability']['brightness'] == 0.0
  # The same frames through the model directly.
  loaded, _ = mdl.load_model(model)
  conv = mdl.InputConvention()
  flips = []
  for c in clean:
    frames = suites.read_sequence(str(root / 'gaussian_noise' / c / 'seq0'))
    x = (frames.astype('float32') - np.float32(conv.mean)) / np.float32(conv.std)
    preds = np.argmax(np.asarray(loaded(x, training=False)), 1)
    flips.append(np.mean(preds[1:] != preds[0]))
  assert result['flip_probability']['gaussian_noise'] == pytest.approx(np.mean(flips))
  assert result['mfr'] == pytest.approx(np.mean(
      [100 * result['flip_probability'][p] / robustness.ALEXNET_FP[p]
       for p in ('gaussian_noise', 'brightness')]))
  assert result['complete'] is False
  assert (tmp_path / 'out' / 'imagenet_p.md').exists()
