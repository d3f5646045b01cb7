"""The notebook API: noisy_student_tf.load(model_dir) -> Classifier, and the lazy re-exports."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, _extract, run_without_tensorflow

REPO = pathlib.Path(__file__).resolve().parents[1]
PER_CLASS = 8  # eval images per CIFAR-10 class


def _make_model_dir(path, class_names, seed, **overrides):
  """An untrained tiny model dir whose classifier kernel is random and large, so that its top-1
  differs from image to image (an untrained head predicts nearly one class everywhere)."""
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf import models
  config = models.make_config('b0', len(class_names), **{**TINY, **overrides})
  model = models.build_from_config(config)
  rng = np.random.default_rng(seed)
  for v in model.weights:
    if v.path == 'logits/kernel':
      v.assign(rng.normal(0.0, 2.0, v.shape).astype('float32'))
  model_dir_lib.write_config(path, model_dir_lib.ModelDirConfig(model=config,
                                                                class_names=list(class_names)))
  for which in ('ema', 'raw'):
    model_dir_lib.save_weights(path, model, which)
  return str(path)


@pytest.fixture(scope='module')
def eval_folder(tmp_path_factory):
  """FOLDER/<class>/*.jpg: the first PER_CLASS real CIFAR-10 test JPEGs of every class."""
  return _extract(tmp_path_factory, 'api_eval', {'test': PER_CLASS}) / 'test'


@pytest.fixture(scope='module')
def model_dir(eval_folder, tmp_path_factory):
  classes = sorted(p.name for p in eval_folder.iterdir())
  return _make_model_dir(tmp_path_factory.mktemp('api_model'), classes, seed=0)


@pytest.fixture(scope='module')
def clf(model_dir):
  import noisy_student_tf
  return noisy_student_tf.load(model_dir)


def _listed(folder):
  """(paths, labels) of a folder: source, in its order."""
  from noisy_student_tf.data import sources
  _, items = sources.list_folder(str(folder))
  return [p for p, _, _ in items], np.array([label for _, _, label in items])


def _pipeline(clf, folder, batch_size):
  """{path: (model inputs, logits)} by ns-eval's own path (make_eval_dataset, then
  evaluator.make_predict_fn of the model), for clf's model dir."""
  from noisy_student_tf.data import pipeline, sources
  from noisy_student_tf.evaluate import evaluator
  config = clf.config
  source = sources.open_source(f'folder:{folder}')
  ds = pipeline.make_eval_dataset(source, batch_size=batch_size, resolution=config.model.resolution,
                                  convention=config.input, small_image=config.model.small_image)
  predict = evaluator.make_predict_fn(clf.model)
  out = {}
  for batch in ds:
    logits = predict(batch['image']).numpy()
    for sid, image, row in zip(batch['source_id'].numpy(), batch['image'].numpy(), logits):
      out[str(folder / sid.decode())] = image, row
  return out


def test_predict_gives_ns_eval_top1_on_the_same_images(clf, model_dir, eval_folder, tmp_path):
  output = tmp_path / 'eval.json'
  ns_eval = subprocess.Popen(  # runs while the in-process checks do
      [sys.executable, '-m', 'noisy_student_tf.cli.eval', f'--model_dir={model_dir}',
       f'--eval_data=folder:{eval_folder}', f'--output={output}', '--batch_size=40'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    paths, labels = _listed(eval_folder)
    result = clf.predict(paths, batch_size=40)
    assert len(result) == len(paths) == 10 * PER_CLASS
    assert result.probabilities.shape == (len(paths), 10)
    assert len(set(result.indices.tolist())) >= 3, 'the model must not predict one class only'
    assert result.names == [clf.class_names[i] for i in result.indices]
    assert result.sources == paths
    # Per image, against the evaluation pipeline: the same model inputs, the same top-1.
    reference = _pipeline(clf, eval_folder, batch_size=40)
    np.testing.assert_array_equal(clf.preprocess(paths), np.stack([reference[p][0] for p in paths]))
    ref_logits = np.stack([reference[p][1] for p in paths])
    np.testing.assert_array_equal(result.indices, ref_logits.argmax(1))
    np.testing.assert_allclose(result.logits, ref_logits, rtol=1e-5, atol=1e-5)
    # The accuracy, against ns-eval's top1 on a folder of those images.
    _, stderr = ns_eval.communicate(timeout=240)
  finally:
    ns_eval.kill()
  assert ns_eval.returncode == 0, stderr[-3000:]
  evaluated = json.loads(output.read_text())
  assert evaluated['num_examples'] == len(paths)
  assert evaluated['top1'] == pytest.approx(float(np.mean(result.indices == labels)), abs=1e-9)


def test_center_crop_models_get_the_pipeline_inputs_too(eval_folder, tmp_path):
  """A large-image model (center crop of side R / (R + crop_padding), then resize) trained at
  40 px, loaded at 56 px with its raw weights: the model inputs equal the evaluation pipeline's
  at 56 px, bit for bit."""
  import noisy_student_tf
  from noisy_student_tf.data import pipeline, sources
  classes = sorted(p.name for p in eval_folder.iterdir())
  model_dir = _make_model_dir(tmp_path / 'crop', classes, seed=1, small_image=False,
                              resolution=40)
  paths, _ = _listed(eval_folder)
  clf = noisy_student_tf.load(model_dir, weights='raw', resolution=56)
  assert clf.resolution == 56 and clf.weights == 'raw' and not clf.small_image
  ds = pipeline.make_eval_dataset(sources.open_source(f'folder:{eval_folder}'), batch_size=100,
                                  resolution=56, convention=clf.input_convention)
  np.testing.assert_array_equal(clf.preprocess(paths), next(iter(ds))['image'].numpy())


def test_bytes_paths_and_arrays_give_identical_predictions(clf, eval_folder, tmp_path):
  import tensorflow as tf
  paths, _ = _listed(eval_folder)
  paths = paths[::4]
  encoded = [pathlib.Path(p).read_bytes() for p in paths]
  arrays = [tf.io.decode_image(e, channels=3).numpy() for e in encoded]
  # A PNG copy (lossless: decodes to the same array) of a non-square, non-32 px image.
  big = np.kron(arrays[0], np.ones((2, 3, 1), np.uint8))  # 64 x 96
  png = tf.io.encode_png(big).numpy()
  (tmp_path / 'big.png').write_bytes(png)

  by_path = clf.predict(paths, batch_size=8)
  for other in (clf.predict([pathlib.Path(p) for p in paths], batch_size=8),
                clf.predict(encoded, batch_size=8),
                clf.predict(arrays, batch_size=8),
                clf.predict(np.stack(arrays), batch_size=8),
                clf.predict(arrays[:3] + encoded[3:6] + paths[6:], batch_size=8)):
    np.testing.assert_array_equal(other.indices, by_path.indices)
    np.testing.assert_array_equal(other.logits, by_path.logits)
    np.testing.assert_array_equal(other.probabilities, by_path.probabilities)
  # Other containers: a 1-D object array of paths (a pandas column), a tensor batch, PIL images.
  from PIL import Image
  for other in (clf.predict(np.array(paths, dtype=object), batch_size=8),
                clf.predict(tf.constant(np.stack(arrays)), batch_size=8),
                clf.predict([Image.fromarray(a) for a in arrays], batch_size=8)):
    np.testing.assert_array_equal(other.logits, by_path.logits)
  gray = Image.fromarray(arrays[0]).convert('L')  # converted to RGB, as decode does grayscale
  as_rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=-1)
  np.testing.assert_array_equal(clf.predict(gray).logits, clf.predict(as_rgb).logits)
  single = [clf.predict(x) for x in (tmp_path / 'big.png', str(tmp_path / 'big.png'), png, big)]
  for s in single:
    assert len(s) == 1
    np.testing.assert_array_equal(s.logits, single[0].logits)
  # Batch composition does not change an image's prediction beyond float noise.
  np.testing.assert_allclose(clf.predict(paths[:1]).logits, by_path.logits[:1], atol=1e-5)


def test_probabilities_top_k_and_result_helpers(clf, eval_folder):
  paths, _ = _listed(eval_folder)
  paths = paths[:12]
  result = clf(paths)
  p = result.probabilities
  assert p.dtype == np.float32 and np.allclose(p.sum(1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(clf.predict_proba(paths), p)
  np.testing.assert_array_equal(result.confidences, p.max(1))
  indices, probs, names = clf.top_k(paths, k=3)
  assert indices.shape == probs.shape == (12, 3)
  np.testing.assert_array_equal(indices[:, 0], result.indices)
  assert np.all(np.diff(probs, axis=1) <= 0)
  np.testing.assert_array_equal(probs, np.take_along_axis(p, indices, 1))
  assert names == [[clf.class_names[j] for j in row] for row in indices]
  np.testing.assert_array_equal(result.top_k(3)[0], indices)
  rows = result.to_rows()
  assert rows[0] == {'source': paths[0], 'index': int(result.indices[0]), 'name': result.names[0],
                     'confidence': pytest.approx(float(p[0].max()))}
  assert 'Prediction(12 images' in repr(result)
  crops = clf.preprocess(paths[:2], normalize=False)
  assert crops.dtype == np.uint8 and crops.shape == (2, 32, 32, 3)
  assert clf.preprocess(paths[:2]).shape == (2, 32, 32, 3)
  empty = clf.predict([])
  assert len(empty) == 0 and empty.probabilities.shape == (0, 10)
  assert clf.resolution == 32 and clf.class_names[:2] == ['airplane', 'automobile']
  assert clf.model_dir == str(clf.model_dir) and clf.model.count_params() > 0
  assert clf.weights == 'ema' and 'Classifier(' in repr(clf)


def _png_header(width, height):
  """The signature and IHDR chunk of a PNG claiming width x height pixels (no image data)."""
  import struct
  import zlib
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + ihdr +
          struct.pack('>I', zlib.crc32(b'IHDR' + ihdr)))


def test_bad_inputs_raise_clear_errors_before_the_model_runs(clf, model_dir, eval_folder,
                                                             tmp_path, monkeypatch):
  import noisy_student_tf
  good, _ = _listed(eval_folder)
  jpeg = pathlib.Path(good[0]).read_bytes()
  (tmp_path / 'truncated.jpg').write_bytes(jpeg[:len(jpeg) - 200])  # header whole, data cut
  calls = []
  monkeypatch.setattr(clf, '_predict_fn', lambda images: calls.append(images))
  rgb = np.zeros((8, 8, 3), np.uint8)
  cases = [
      (np.zeros((8, 8), np.uint8), r'shape \(8, 8\).*\[H, W, 3\]'),
      (np.zeros((8, 8, 4), np.uint8), r'4 channels.*RGBA'),
      (np.zeros((2, 8, 8, 1), np.uint8), r'images\[0\] has 1 channels'),
      (rgb.astype(np.float32), 'dtype float32.*uint8'),
      ([rgb, np.zeros((0, 8, 3), np.uint8)], r'images\[1\] is empty'),
      (np.zeros((8,), np.uint8), r'shape \(8,\)'),
      (str(tmp_path / 'missing.jpg'), r"images\[0\] \('.*missing.jpg'\) does not exist"),
      (tmp_path, 'is a folder'),
      (b'', r'images\[0\] \(bytes\) is empty'),
      ([jpeg, b'not an image at all'], r"images\[1\] \(bytes\) is not an image.*b'not an image"),
      (b'\xff\xd8\xff\xe0broken', r'images\[0\] \(bytes\): cannot read the image header '
                                   r'\(Invalid JPEG data, size 10\)'),
      (_png_header(10_000, 10_000), r'too large: it has 100000000 pixels.*max_image_pixels='
                                    r'64000000'),
      (good[:3] + [str(tmp_path / 'truncated.jpg')], r'images\[3\] .*truncated.jpg.*cannot be '
                                                     'decoded'),
      ([good[0], 7], r'images\[1\] is a int'),
      ({'a': good[0]}, 'got a dict'),
      (42, 'got int'),
  ]
  for images, message in cases:
    with pytest.raises(ValueError, match=message):
      clf.predict(images, batch_size=8)
  with pytest.raises(ValueError, match=r'k must be an integer in \[1, 10\]'):
    clf.top_k(good[:2], k=11)
  with pytest.raises(ValueError, match='batch_size must be a positive integer'):
    clf.predict(good[:2], batch_size=0)
  assert not calls, 'the model ran before the inputs were checked'
  # The pixel limit is the load() argument; 0 turns it off (the header-only PNG then fails to
  # decode instead).
  tight = noisy_student_tf.load(model_dir, max_image_pixels=1000)
  with pytest.raises(ValueError, match='1024 pixels.*max_image_pixels=1000'):
    tight.predict(good[:1])
  assert len(tight.preprocess(np.zeros((64, 64, 3), np.uint8))) == 1  # arrays: already decoded
  unlimited = noisy_student_tf.load(model_dir, max_image_pixels=0)
  with pytest.raises(ValueError, match='cannot be decoded'):
    unlimited.predict(_png_header(10_000, 10_000))
  with pytest.raises(ValueError, match='weights must be one of'):
    noisy_student_tf.load(model_dir, weights='best')
  with pytest.raises(FileNotFoundError, match='config.json'):
    noisy_student_tf.load(tmp_path / 'no_model_here')
  with pytest.raises(ValueError, match='resolution must be a positive integer'):
    noisy_student_tf.load(model_dir, resolution=0)


def test_importing_the_package_does_not_import_tensorflow():
  result = run_without_tensorflow('''
    import noisy_student_tf as ns  # (noisy_student_tf.models without tensorflow: test_models.py)
    names = {'load', 'Classifier', 'Prediction', 'train', 'run_pipeline', 'TrainConfig',
             'PipelineConfig', 'LabelConfig', 'FilterConfig'}
    assert names <= set(ns.__all__) and names <= set(dir(ns)), ns.__all__
    assert not hasattr(ns, 'no_such_name') and ns.__version__
    assert not [m for m in sys.modules if m.startswith('tensorflow')]
    assert not [m for m in sys.modules if m.startswith('noisy_student_tf.')]
    print('ok')
  ''', timeout=60)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'ok'


def test_reexports_resolve_and_have_docstrings():
  import types
  import noisy_student_tf as ns
  from noisy_student_tf import classifier
  from noisy_student_tf.selftrain import filter as filter_lib, label, pipeline
  from noisy_student_tf.train import trainer
  assert ns.load is classifier.load and ns.Classifier is classifier.Classifier
  assert ns.run_pipeline is pipeline.run_pipeline and ns.PipelineConfig is pipeline.PipelineConfig
  assert ns.TrainConfig is trainer.TrainConfig and ns.LabelConfig is label.LabelConfig
  assert ns.FilterConfig is filter_lib.FilterConfig
  # noisy_student_tf.train: the subpackage (imported above, which attached it), and callable.
  assert isinstance(ns.train, types.ModuleType) and ns.train.trainer is trainer
  from noisy_student_tf import train as imported
  assert imported is ns.train and callable(ns.train)
  for name in ns.__all__:
    assert getattr(ns, name).__doc__, name
  assert ns.train.__call__.__doc__


def test_train_call_runs_the_trainer(monkeypatch):
  """noisy_student_tf.train(config) is trainer.train(config)."""
  import noisy_student_tf
  from noisy_student_tf.train import trainer
  seen = []
  monkeypatch.setattr(trainer, 'train', lambda config: seen.append(config) or {'step': 1})
  assert noisy_student_tf.train('CONFIG') == {'step': 1} and seen == ['CONFIG']
