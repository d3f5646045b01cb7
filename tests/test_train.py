"""ns-train: real training on the shared CIFAR-10 JPEGs, EMA, resume after SIGKILL, schedules."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_FLAGS = ['--model=b0', '--width=0.25', '--depth=0.25', '--resolution=32', '--small_image']


def _read_log(model_dir, kind='train'):
  """Last record per step from MODEL_DIR/train_log.jsonl (a resumed run may repeat steps)."""
  records = {}
  with open(os.path.join(model_dir, 'train_log.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      if r['kind'] == kind:
        records[r['step']] = r
  return [records[s] for s in sorted(records)]


@pytest.fixture(scope='module')
def cifar_model(cifar10_small, tmp_path_factory):
  """A tiny EfficientNet trained 300 steps on 2000 real CIFAR-10 JPEGs: (model_dir, result)."""
  from noisy_student_tf.train.trainer import TrainConfig, train
  model_dir = str(tmp_path_factory.mktemp('cifar_model'))
  config = TrainConfig(
      model_dir=model_dir, labeled=f'folder:{cifar10_small}/train',
      eval_data=f'folder:{cifar10_small}/test', model='b0', **TINY, dropout=0.0,
      drop_path_rate=0.0, bn_momentum=0.9, batch_size=64, train_steps=300, warmup_epochs=0.5,
      base_learning_rate=0.1, steps_per_execution=10, log_every=50, checkpoint_every=100,
      progress='none')
  return model_dir, train(config)


def test_cifar10_test_accuracy_clearly_above_chance(cifar_model):
  model_dir, result = cifar_model
  assert result['step'] == 300
  assert result['num_eval_examples'] == 1000
  assert result['top1'] >= 0.30, result
  log = _read_log(model_dir)
  assert log[-1]['loss'] < log[0]['loss']
  with open(os.path.join(model_dir, 'train_result.json')) as f:
    assert json.load(f)['top1'] == result['top1']


def test_model_dir_complete_and_evaluable(cifar_model, cifar10_small):
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf.evaluate.evaluator import evaluate_model_dir
  model_dir, result = cifar_model
  assert model_dir_lib.is_complete(model_dir)
  config = model_dir_lib.read_config(model_dir)
  assert config.class_names[:2] == ['airplane', 'automobile']
  assert config.training['effective']['total_steps'] == 300
  ev = evaluate_model_dir(model_dir, f'folder:{cifar10_small}/test', batch_size=500)
  assert ev['num_examples'] == 1000
  assert ev['top1'] == pytest.approx(result['top1'])


def test_ema_weights_differ_from_raw_and_are_used(cifar_model, cifar10_small):
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf.evaluate.evaluator import evaluate_model_dir
  model_dir, result = cifar_model
  ema, _ = model_dir_lib.load_model(model_dir, 'ema')
  raw, _ = model_dir_lib.load_model(model_dir, 'raw')
  by_path = {v.path: v.numpy() for v in raw.weights}
  differ = {v.path for v in ema.weights if not np.allclose(v.numpy(), by_path[v.path])}
  assert 'logits/kernel' in differ
  assert 'stem_bn/moving_mean' in differ  # the average covers the batch-norm statistics too
  raw_eval = evaluate_model_dir(model_dir, f'folder:{cifar10_small}/test', weights='raw',
                                batch_size=500)
  assert raw_eval['loss'] != pytest.approx(result['eval_loss'], rel=1e-6)


def test_rerun_of_finished_run_does_not_train_again(cifar_model, cifar10_small):
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf.train.trainer import TrainConfig, train
  model_dir, _ = cifar_model
  config = model_dir_lib.read_config(model_dir).training
  config = {k: v for k, v in config.items() if k != 'effective'}
  config['eval_data'] = None
  again = train(TrainConfig(**config))
  assert again['resumed_from'] == 300 and again['step'] == 300
  assert 'loss' not in again  # no step was run


def _train_cmd(model_dir, steps, extra=()):
  return [sys.executable, '-m', 'noisy_student_tf.cli.train', *TINY_FLAGS,
          '--labeled=digits:train', f'--model_dir={model_dir}', f'--train_steps={steps}',
          '--batch_size=32', '--checkpoint_every=10', '--log_every=5', '--warmup_epochs=1',
          '--lr_decay_epochs=0.5', '--progress=log', *extra]


def test_resume_after_sigkill_reaches_exact_step_and_learning_rate(tmp_path):
  from noisy_student_tf.train.optim import LearningRate
  model_dir = tmp_path / 'run'
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  # With RandAugment on the accelerator (the batch noise of data/batch_augment.py): it trains,
  # and its step-keyed draws survive the restart.
  noise = ['--randaug_layers=2', '--randaug_magnitude=9', '--randaug_on=accelerator']
  proc = subprocess.Popen(_train_cmd(model_dir, 60, noise), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_state = model_dir / 'ckpt' / 'checkpoint'
  deadline = time.time() + 300  # start-up alone takes over a minute on a loaded 2-core machine
  while not ckpt_state.exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  time.sleep(np.random.default_rng().uniform(0, 2))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert ckpt_state.exists(), 'no checkpoint was written before the kill'
  out = subprocess.run(_train_cmd(model_dir, 60, noise), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads((model_dir / 'train_result.json').read_text())
  assert result['step'] == 60
  assert result['resumed_from'] is not None and 10 <= result['resumed_from'] <= 60
  training = json.loads((model_dir / 'config.json').read_text())['training']['effective']
  schedule = LearningRate(base=training['peak_learning_rate'], total_steps=60,
                          warmup_steps=training['warmup_steps'],
                          decay_steps=training['decay_steps'])
  if result['resumed_from'] < 60:
    assert result['learning_rate'] == pytest.approx(schedule.value(60))
  log = _read_log(model_dir)
  assert [r['step'] for r in log] == list(range(5, 61, 5))
  assert np.mean([r['loss'] for r in log[-3:]]) < log[0]['loss']
  for r in log:
    assert r['learning_rate'] == pytest.approx(schedule.value(r['step']), rel=1e-6)


def test_learning_rate_schedules():
  from noisy_student_tf.train.optim import LearningRate
  exp = LearningRate(base=0.256, total_steps=1000, warmup_steps=10, kind='exponential',
                     decay_steps=24, decay_factor=0.97)
  assert exp.value(0) == 0
  assert exp.value(5) == pytest.approx(0.128)
  assert exp.value(23) == pytest.approx(0.256)
  assert exp.value(24) == pytest.approx(0.256 * 0.97)
  assert exp.value(480) == pytest.approx(0.256 * 0.97 ** 20, rel=1e-5)
  cos = LearningRate(base=1.0, total_steps=100, kind='cosine')
  assert [round(cos.value(s), 5) for s in (0, 50, 100, 200)] == [1.0, 0.5, 0.0, 0.0]
  with pytest.raises(ValueError, match='linear'):
    LearningRate(base=1.0, total_steps=10, kind='linear')


def test_ema_follows_official_decay_rule_and_covers_bn_statistics():
  import tensorflow as tf
  from noisy_student_tf import models
  from noisy_student_tf.train import optim
  model = models.build_model('b0', 10, **TINY)
  tracked = optim.averaged_variables(model)
  paths = {v.path for v in tracked}
  assert 'stem_bn/moving_variance' in paths and 'logits/kernel' in paths
  assert not any('seed_generator' in p for p in paths)
  ema = optim.WeightAverage(tracked, decay=0.9999)
  kernel = model.get_layer('logits').kernel
  before = kernel.numpy().copy()
  kernel.assign(before + 1.0)
  ema.update(tf.constant(1, tf.int64))  # decay min(0.9999, 2/11)
  value = ema.values_by_path()['logits/kernel']
  np.testing.assert_allclose(value, before + (1 - 2 / 11), rtol=1e-5, atol=1e-6)


def test_weight_decay_only_on_kernels():
  from noisy_student_tf import models
  from noisy_student_tf.train import optim
  model = models.build_model('b0', 10, **TINY)
  decayed = {v.path for v in model.trainable_variables if optim.is_kernel(v)}
  assert 'stem_conv/kernel' in decayed and 'block1a_dwconv/kernel' in decayed
  assert 'logits/kernel' in decayed and 'block1a_se/reduce/kernel' in decayed
  assert not any(p.endswith(('gamma', 'beta', 'bias')) for p in decayed)
  kernels = [v for v in model.trainable_variables if optim.is_kernel(v)]
  expected = 1e-5 * sum(float((v.numpy() ** 2).sum()) / 2 for v in kernels)
  assert float(optim.weight_decay_loss(model.trainable_variables, 1e-5)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize('overrides, message', [
    (dict(train_steps=None), 'exactly one of train_steps and epochs'),
    (dict(precision='float64'), 'precision'),
    (dict(strategy='horovod'), 'strategy'),
    (dict(batch_size=0), 'batch_size'),
    (dict(labeled=''), 'labeled'),
    (dict(width=-1.0), 'width'),
])
def test_bad_settings_fail_before_any_work(tmp_path, overrides, message):
  from noisy_student_tf.train.trainer import TrainConfig, train
  config = dict(model_dir=str(tmp_path / 'm'), labeled='digits:train', train_steps=5, **TINY)
  config.update(overrides)
  with pytest.raises(ValueError, match=message):
    train(TrainConfig(**config))
  assert not (tmp_path / 'm').exists()


def test_bad_sources_fail_with_clear_message(tmp_path, cifar10_small):
  from noisy_student_tf.train.trainer import TrainConfig, train
  two_classes = tmp_path / 'two'
  for cls in ('cat', 'dog'):
    (two_classes / cls).mkdir(parents=True)
    for f in sorted((cifar10_small / 'test' / cls).iterdir())[:2]:
      (two_classes / cls / f.name).symlink_to(f.resolve())
  base = dict(model_dir=str(tmp_path / 'm'), labeled=f'folder:{cifar10_small}/train',
              train_steps=5, **TINY)
  with pytest.raises(ValueError, match='2 classes'):
    train(TrainConfig(**base, eval_data=f'folder:{two_classes}'))
  with pytest.raises((ValueError, FileNotFoundError), match='nowhere'):
    train(TrainConfig(**{**base, 'labeled': f'folder:{tmp_path}/nowhere'}))
  assert not (tmp_path / 'm').exists()


def test_cli_rejects_unknown_flag_value(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'noisy_student_tf.cli.train', '--labeled=digits',
                        f'--model_dir={tmp_path}/m', '--train_steps=5', '--precision=float64'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert 'precision' in out.stderr and 'float64' in out.stderr
