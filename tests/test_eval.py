"""ns-eval and the metrics behind it."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_metrics_on_hand_made_logits():
  from noisy_student_tf.evaluate.metrics import ClassificationMetrics
  m = ClassificationMetrics()
  logits = np.array([[5., 1, 0, 0, 0, 0, 0],    # label 0: top-1
                     [0., 1, 2, 3, 4, 5, 6],    # label 2: rank 4 -> top-5 only
                     [0., 1, 2, 3, 4, 5, 6],    # label 0: rank 6 -> neither
                     [1., 1, 1, 1, 1, 1, 1]])   # ignored (label -1)
  m.update(logits[:2], [0, 2])
  m.update(logits[2:], [0, -1])
  r = m.result()
  assert r['num_examples'] == 3
  assert r['top1'] == pytest.approx(1 / 3)
  assert r['top5'] == pytest.approx(2 / 3)
  log_softmax = logits[:3] - np.log(np.exp(logits[:3]).sum(1, keepdims=True))
  assert r['loss'] == pytest.approx(-np.mean(log_softmax[[0, 1, 2], [0, 2, 0]]))
  with pytest.raises(ValueError, match='out of range'):
    m.update(logits[:1], [7])


@pytest.fixture(scope='module')
def untrained_dir(tmp_path_factory):
  """A model dir holding an untrained tiny 10-class model (ema = raw)."""
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf import models
  path = tmp_path_factory.mktemp('untrained')
  config = models.make_config('b0', 10, **TINY)
  model = models.build_from_config(config)
  model_dir_lib.write_config(path, model_dir_lib.ModelDirConfig(
      model=config, class_names=[str(i) for i in range(10)]))
  for which in ('ema', 'raw'):
    model_dir_lib.save_weights(path, model, which)
  return path


def test_evaluate_model_dir_counts_and_checks_classes(untrained_dir, tmp_path):
  from noisy_student_tf import model_dir as model_dir_lib
  from noisy_student_tf import models
  from noisy_student_tf.evaluate.evaluator import evaluate_model_dir
  r = evaluate_model_dir(str(untrained_dir), 'digits:test', batch_size=100, resolution=48)
  assert r['num_examples'] == 360 and r['resolution'] == 48
  assert 0 <= r['top1'] <= r['top5'] <= 1
  five = models.make_config('b0', 5, **TINY)
  model_dir_lib.write_config(tmp_path, model_dir_lib.ModelDirConfig(model=five))
  with pytest.raises(ValueError, match='10 classes but the model'):
    evaluate_model_dir(str(tmp_path), 'digits:test')
  with pytest.raises(FileNotFoundError, match='config.json'):
    evaluate_model_dir(str(tmp_path / 'missing'), 'digits:test')


def test_ns_eval_writes_json(untrained_dir, tmp_path):
  output = tmp_path / 'eval.json'
  out = subprocess.run([sys.executable, '-m', 'noisy_student_tf.cli.eval',
                        f'--model_dir={untrained_dir}', '--eval_data=digits:test',
                        f'--output={output}', '--weights=raw'],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(output.read_text())
  assert result['num_examples'] == 360 and result['weights'] == 'raw'
  assert {'top1', 'top5', 'loss'} <= set(result)
  assert '| top-1 |' in out.stdout
