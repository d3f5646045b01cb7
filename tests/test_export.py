"""ns-export: a tiny model trained on real CIFAR-10, exported with the binary, checked in a fresh
process that does not import noisy_student_tf (tools/serving_check.py), against ns-eval's path."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, TINY
from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.data import pipeline, sources
from noisy_student_tf.evaluate import evaluator
from noisy_student_tf.export import saved_model, versions, warmup

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')


def _run(args, timeout=180):
  return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


@pytest.fixture(scope='module')
def model_dir(cifar10_small, tmp_path_factory):
  """A tiny model fitted a few steps on real CIFAR-10 (EMA slot = trained weights; raw slot =
  untrained weights, so that exporting the wrong slot shows)."""
  keras.utils.set_random_seed(0)
  labeled = sources.open_source(f'folder:{cifar10_small / "train"}')
  # bn_momentum 0.9: the moving statistics must catch up within the few steps fitted.
  config = models.make_config('b0', 10, dropout=0.0, drop_path_rate=0.0, bn_momentum=0.9, **TINY)
  convention = model_dir_lib.InputConvention()
  ds = pipeline.make_train_dataset(labeled, batch_size=64, resolution=32, num_classes=10,
                                   convention=convention, small_image=True, seed=0)
  model = models.build_from_config(config)
  model.compile(keras.optimizers.Adam(3e-3), keras.losses.CategoricalCrossentropy(from_logits=True))
  model.fit(ds.map(lambda x, y, w: (x, y)), steps_per_epoch=25, epochs=1, verbose=0)
  out = str(tmp_path_factory.mktemp('model'))
  model_dir_lib.write_config(out, model_dir_lib.ModelDirConfig(
      model=config, class_names=list(labeled.class_names)))
  model_dir_lib.save_weights(out, model, 'ema')
  model_dir_lib.save_weights(out, models.build_from_config(config), 'raw')
  return out


@pytest.fixture(scope='module')
def images_dir(cifar10_small, tmp_path_factory):
  """folder:-style test images: 2 CIFAR JPEGs per class plus one PNG per class at another size
  (45 x 37), so that the resize path of the preprocessing is exercised too."""
  out = tmp_path_factory.mktemp('served')
  for cls in sorted(os.listdir(cifar10_small / 'test')):
    files = sorted((cifar10_small / 'test' / cls).iterdir())
    (out / cls).mkdir()
    for f in files[:2]:
      (out / cls / f.name).symlink_to(f)
    Image.open(files[2]).resize((45, 37), Image.BICUBIC).save(out / cls / 'resized.png')
  return out


@pytest.fixture(scope='module')
def export_dir(model_dir, tmp_path_factory):
  """EXPORT_DIR after one run of the ns-export binary (version 1, default flags)."""
  out = str(tmp_path_factory.mktemp('export') / 'noisy_student')
  proc = _run([sys.executable, '-m', 'noisy_student_tf.cli.export', f'--model_dir={model_dir}',
               f'--export_dir={out}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'version 1' in proc.stdout
  return out


@pytest.fixture(scope='module')
def check(export_dir, images_dir, tmp_path_factory):
  """tools/serving_check.py's JSON results on EXPORT_DIR, run in a fresh process."""
  out = str(tmp_path_factory.mktemp('check') / 'check.json')
  proc = _run([sys.executable, 'tools/serving_check.py', export_dir, '--repeats=1',
               f'--images={images_dir}/*/*', f'--json_out={out}'])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '| serving_default | image_bytes string' in proc.stdout
  with open(out) as f:
    return json.load(f)


def test_layout_and_self_contained(export_dir, check):
  assert versions.existing_versions(export_dir) == [1]
  assert not [n for n in os.listdir(export_dir) if n.startswith('.tmp')]
  version = os.path.join(export_dir, '1')
  for name in ('saved_model.pb', 'variables', 'assets.extra/tf_serving_warmup_requests',
               'assets.extra/export.json'):
    assert os.path.exists(os.path.join(version, name)), name
  umask = os.umask(0)
  os.umask(umask)
  # As readable as any new folder (not mkdtemp's 0700): TF Serving may run as another user.
  assert os.stat(version).st_mode & 0o777 == 0o777 & ~umask
  assert check['imported_noisy_student_tf'] is False
  assert check['failures'] == []


def test_served_predictions_equal_eval_path(model_dir, images_dir, check):
  served = check['predictions']['serving_default']
  assert len(served) == 30
  source = sources.open_source(f'folder:{images_dir}')
  model, config = model_dir_lib.load_model(model_dir)  # EMA weights, as ns-eval
  ds = pipeline.make_eval_dataset(source, batch_size=16, resolution=32, convention=config.input,
                                  small_image=True)
  predict = evaluator.make_predict_fn(model)
  served_correct, classes = 0, set()
  for batch in ds:
    probs = tf.nn.softmax(predict(batch['image'])).numpy()
    for sid, p, label in zip(batch['source_id'].numpy(), probs, batch['label'].numpy()):
      s = served[os.path.join(str(images_dir), sid.decode())]
      np.testing.assert_allclose(s['probabilities'], p, atol=2e-5)
      assert s['top_k_classes'][0] == int(np.argmax(p))
      assert s['top_k_names'][0] == source.class_names[s['top_k_classes'][0]]
      assert len(s['top_k_classes']) == 5 and s['top_k_scores'] == sorted(s['top_k_scores'])[::-1]
      served_correct += s['top_k_classes'][0] == label
      classes.add(s['top_k_classes'][0])
  assert len(classes) > 1, 'the tiny model predicts one class for everything: not trained'
  ns_eval = evaluator.evaluate_model_dir(model_dir, f'folder:{images_dir}', batch_size=16)
  assert ns_eval['num_examples'] == 30
  assert served_correct / 30 == pytest.approx(ns_eval['top1'])


def test_bad_inputs_raise_invalid_argument(check):
  results = {(b['signature'], b['case']): b for b in check['bad_inputs']}
  assert all(b['ok'] and b['error'] == 'InvalidArgument' for b in results.values()), results
  assert 'empty strings at batch positions' in results['serving_default', 'empty string']['message']
  assert 'Unknown image file format' in results['serving_default', 'not an image']['message']
  assert 'JPEG' in results['serving_default', 'truncated JPEG']['message']
  assert '0-255' in results['predict_images', 'pixel < 0 (already normalised)']['message']
  assert 'NaN' in results['predict_images', 'NaN']['message']


def test_warmup_file_parses_as_prediction_logs(export_dir, check):
  logs = warmup.read_requests(
      os.path.join(export_dir, '1', 'assets.extra', 'tf_serving_warmup_requests'))
  assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
      'serving_default', 'serving_default', 'predict_images']
  first = logs[0].predict_log.request
  assert first.model_spec.name == 'noisy_student'
  assert first.inputs['image_bytes'].dtype == tf.string.as_datatype_enum
  shape = logs[1].predict_log.request.inputs['image_bytes'].tensor_shape
  assert [d.size for d in shape.dim] == [32]
  assert [d.size for d in logs[2].predict_log.request.inputs['images'].tensor_shape.dim] == [
      1, 32, 32, 3]
  # The fresh process replayed every record through the signatures it names.
  assert [(w['signature'], w['outputs']['top_k_classes']) for w in check['warmup']] == [
      ('serving_default', [1, 5]), ('serving_default', [32, 5]), ('predict_images', [1, 5])]


def test_saved_model_cli_lists_signatures(export_dir):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  proc = _run([cli, 'show', '--all', '--dir', os.path.join(export_dir, '1')])
  assert proc.returncode == 0, proc.stderr[-2000:]
  sigs = {}
  for block in re.split(r"signature_def\['", proc.stdout)[1:]:
    name = block.split("'", 1)[0]
    sigs[name] = {m[0]: (m[1], m[2]) for m in re.findall(
        r"(?:inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", block)}
  assert sigs['serving_default']['image_bytes'] == ('DT_STRING', '(-1)')
  assert sigs['predict_images']['images'] == ('DT_FLOAT', '(-1, 32, 32, 3)')
  for name in ('serving_default', 'predict_images'):
    assert sigs[name]['probabilities'] == ('DT_FLOAT', '(-1, 10)')
    assert sigs[name]['top_k_classes'] == ('DT_INT32', '(-1, 5)')
    assert sigs[name]['top_k_scores'] == ('DT_FLOAT', '(-1, 5)')
    assert sigs[name]['top_k_names'] == ('DT_STRING', '(-1, 5)')


def test_next_version_labels_file_and_bad_settings(model_dir, export_dir, images_dir, tmp_path):
  labels = tmp_path / 'labels.txt'
  labels.write_text(''.join(f'label {i}\n' for i in range(10)))
  result = saved_model.export(saved_model.ExportConfig(
      model_dir, export_dir, labels_file=str(labels), top_k=3, warmup_batch_sizes=(2,),
      verify=False))
  assert result.version == 2 and versions.existing_versions(export_dir) == [1, 2]
  loaded = tf.saved_model.load(result.path)
  jpeg = open(sorted(images_dir.glob('*/*.jpg'))[0], 'rb').read()
  out = loaded.signatures['serving_default'](image_bytes=tf.constant([jpeg, jpeg]))
  assert out['top_k_names'].shape == (2, 3)
  assert out['top_k_names'][0, 0].numpy().decode() == f'label {out["top_k_classes"][0, 0]}'

  # Each bad setting is refused before any work, naming the bad value; nothing is written.
  bad = [(dict(version=2), 'version 2 already exists'), (dict(version=0), 'got 0'),
         (dict(top_k=0), 'top_k'), (dict(weights='best'), "'best'"),
         (dict(labels_file=str(tmp_path / 'missing.txt')), 'missing.txt')]
  for overrides, message in bad:
    with pytest.raises(ValueError, match=re.escape(message)):
      saved_model.export(saved_model.ExportConfig(model_dir, export_dir, **overrides))
  labels.write_text('a\nb\n')
  with pytest.raises(ValueError, match='holds 2 class names, but the model has 10'):
    saved_model.export(saved_model.ExportConfig(model_dir, export_dir, labels_file=str(labels)))
  with pytest.raises(FileNotFoundError, match='config.json not found'):
    saved_model.export(saved_model.ExportConfig(str(tmp_path), export_dir))
  assert versions.existing_versions(export_dir) == [1, 2]
  assert not [n for n in os.listdir(export_dir) if n.startswith('.tmp')]
