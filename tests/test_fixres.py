"""FixRes fine-tuning of a trained tiny CIFAR-10 model at a higher resolution: only the classifier,
the batch-norm statistics (or the layers from `trainable_from` on) change, and accuracy at the new
resolution does not drop."""

import os

import numpy as np
import pytest

from noisy_student_tf import model_dir as mdl
from noisy_student_tf.evaluate.evaluator import evaluate_model_dir
from noisy_student_tf.train import fixres
from test_robust_suites import tiny_model_dirs

NEW_RESOLUTION = 48


@pytest.fixture(scope='module')
def trained_model(tmp_path_factory, cifar10_small):
  return tiny_model_dirs(tmp_path_factory, cifar10_small)[1]


def _weights(model_dir, resolution=None):
  model, config = mdl.load_model(model_dir, resolution=resolution)
  return {v.path: np.array(v.numpy()) for v in model.weights}, config


def _changed(before, after):
  assert set(before) == set(after)
  return {p for p in before if not np.array_equal(before[p], after[p])}


def test_fixres_updates_only_classifier_and_bn_statistics(trained_model, cifar10_small, tmp_path):
  test_data = f'folder:{cifar10_small / "test"}'
  acc_before = evaluate_model_dir(trained_model, test_data, resolution=NEW_RESOLUTION,
                                  batch_size=250)['top1']
  out = str(tmp_path / 'fixres')
  result = fixres.finetune(fixres.FixResConfig(
      source_dir=trained_model, model_dir=out, labeled=f'folder:{cifar10_small / "train"}',
      resolution=NEW_RESOLUTION, steps=40, batch_size=50, log_every=20))
  assert mdl.is_complete(out) and result['steps'] == 40
  assert result['trainable_variables'] == ['logits/kernel', 'logits/bias']
  before, _ = _weights(trained_model, NEW_RESOLUTION)
  after, config = _weights(out)
  assert config.model.resolution == NEW_RESOLUTION
  assert config.training['parent'] == os.path.abspath(trained_model)
  changed = _changed(before, after)
  allowed = {p for p in before if p.startswith('logits/') or '/moving_' in p}
  assert changed <= allowed, sorted(changed - allowed)
  assert {'logits/kernel', 'logits/bias', 'stem_bn/moving_mean', 'top_bn/moving_variance'} <= changed
  assert 'top_bn/gamma' not in changed
  acc_after = evaluate_model_dir(out, test_data, batch_size=250)['top1']
  assert acc_after >= acc_before, (acc_before, acc_after)


def test_fixres_trainable_from_and_bad_input(trained_model, cifar10_small, tmp_path):
  labeled = f'folder:{cifar10_small / "train"}'
  out = str(tmp_path / 'last_layers')
  fixres.finetune(fixres.FixResConfig(
      source_dir=trained_model, model_dir=out, labeled=labeled, resolution=NEW_RESOLUTION,
      steps=3, batch_size=20, trainable_from='top_conv'))
  before, _ = _weights(trained_model, NEW_RESOLUTION)
  after, _ = _weights(out)
  changed = _changed(before, after)
  allowed = {p for p in before if p.split('/')[0] in ('top_conv', 'top_bn', 'logits')
             or '/moving_' in p}
  assert changed <= allowed, sorted(changed - allowed)
  assert {'top_conv/kernel', 'top_bn/gamma', 'logits/kernel'} <= changed
  with pytest.raises(ValueError, match="trainable_from 'nope' is not a layer"):
    fixres.finetune(fixres.FixResConfig(source_dir=trained_model, model_dir=str(tmp_path / 'x'),
                                        labeled=labeled, resolution=40, steps=1,
                                        trainable_from='nope'))
  with pytest.raises(ValueError, match='must differ from source_dir'):
    fixres.FixResConfig(source_dir=trained_model, model_dir=trained_model, labeled=labeled,
                        resolution=40).validate()
  with pytest.raises(ValueError, match='not a complete model dir'):
    fixres.FixResConfig(source_dir=str(tmp_path), model_dir=out, labeled=labeled,
                        resolution=40).validate()
