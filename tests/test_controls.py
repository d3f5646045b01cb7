"""Control students (selftrain/controls.py): one change from the student, everything else kept."""

import dataclasses
import types

import numpy as np
import pytest

from noisy_student_tf.selftrain import controls
from noisy_student_tf.train import trainer

STUDENT = trainer.TrainConfig(
    model_dir='/tmp/s', labeled='digits:train', pseudo='pseudo:/tmp/p/*.tfrecord',
    batch_size=64, unlabeled_ratio=3.0, epochs=7.0, epochs_over='pseudo',
    base_learning_rate=0.2, lr_schedule='exponential', warmup_epochs=2.0, lr_decay_epochs=2.4,
    randaug_layers=2, randaug_magnitude=9.0, dropout=0.3, drop_path_rate=0.2, seed=1000,
    init_checkpoint='/tmp/teacher')


def _rates(config, steps, num_labeled=4000):
  labeled = types.SimpleNamespace(num_examples=num_labeled)
  schedule = trainer.make_schedule(config, labeled, steps)
  return np.array([float(schedule(s)) for s in range(0, steps, 7)])


def test_labeled_only_keeps_rows_peak_rate_and_the_whole_schedule_in_steps():
  only = controls.control_train_config(STUDENT, 'labeled_only', 1678, '/tmp/c/model')
  assert only.pseudo is None and only.batch_size == 64 + 192 == controls.rows_per_step(STUDENT)
  assert (only.train_steps, only.epochs, only.epochs_over) == (1678, None, 'labeled')
  # same init, seed and noise
  assert (only.init_checkpoint, only.seed, only.randaug_layers, only.dropout) == (
      '/tmp/teacher', 1000, 2, 0.3)
  # warmup, exponential decay and peak: the same rate at every step
  np.testing.assert_allclose(_rates(only, 1678), _rates(dataclasses.replace(
      STUDENT, train_steps=1678, epochs=None), 1678), rtol=1e-6)
  cosine = dataclasses.replace(STUDENT, lr_schedule='cosine')
  np.testing.assert_allclose(
      _rates(controls.control_train_config(cosine, 'labeled_only', 500, '/tmp/c'), 500),
      _rates(dataclasses.replace(cosine, train_steps=500, epochs=None), 500), rtol=1e-6)


def test_no_noise_changes_only_the_noise():
  quiet = controls.control_train_config(STUDENT, 'no_noise', 1678, '/tmp/c/model')
  assert (quiet.randaug_layers, quiet.dropout, quiet.drop_path_rate) == (0, 0.0, 0.0)
  same = dataclasses.replace(quiet, randaug_layers=2, randaug_magnitude=9.0, dropout=0.3,
                             drop_path_rate=0.2, model_dir=STUDENT.model_dir, train_steps=None,
                             epochs=7.0)
  assert same == STUDENT


@pytest.mark.parametrize('name, student, steps, message', [
    ('labeled_onyl', STUDENT, 10, "unknown control 'labeled_onyl'"),
    ('labeled_only', dataclasses.replace(STUDENT, pseudo=None), 10, 'needs a student with pseudo'),
    ('no_noise', STUDENT, 0, 'steps must be an integer >= 1, got 0'),
])
def test_bad_controls_are_refused(name, student, steps, message):
  with pytest.raises(ValueError, match=message):
    controls.control_train_config(student, name, steps, '/tmp/c')
