"""Control students: what a student's gain over its teacher is measured against.

A student trains longer than its teacher, on more rows a step, with noise; its gain over the
teacher mixes the method (pseudo-labels + noise) with the extra training.  A control changes one
thing of the student and keeps everything else: the same init (the teacher's weights or the same
seeded random init), seed and data order, number of steps (the student's actual count), rows per
step, peak learning rate and schedule.

  labeled_only  no pseudo-labels: all B + U rows of a step from the labeled data.  The learning
                rate is set per 256 labeled rows and warmup / decay count labeled epochs, so
                base_learning_rate is divided and warmup_epochs / lr_decay_epochs multiplied by
                (B + U) / B: the peak rate and the schedule in steps stay the student's.
  no_noise      the student without its noise: RandAugment off, dropout 0, stochastic depth 0.

The student minus labeled_only is what the pseudo-labels add; minus no_noise, what the noise adds.
"""

import dataclasses

CONTROLS = {
    'labeled_only': 'no pseudo-labels (the same rows per step, all labeled)',
    'no_noise': 'no RandAugment, dropout or stochastic depth',
}


def check_names(names):
  """Raises ValueError naming the first entry of `names` that is not a control."""
  for name in names:
    if name not in CONTROLS:
      raise ValueError(f'unknown control {name!r}; expected one of {sorted(CONTROLS)}')


def rows_per_step(config):
  """B + U of a TrainConfig: batch_size labeled rows plus round(ratio x B) pseudo-labeled ones
  (B without pseudo-labels)."""
  if not config.pseudo:
    return config.batch_size
  return config.batch_size + max(1, int(round(config.unlabeled_ratio * config.batch_size)))


def control_train_config(student, name, steps, model_dir):
  """The TrainConfig of control `name` of `student` (a student's TrainConfig with pseudo-labels).

  steps: the student's number of training steps (its length, whatever it was given in).
  model_dir: where the control trains.  Returns a TrainConfig with train_steps=steps.
  Raises ValueError for an unknown control or a student without pseudo-labels.
  """
  check_names([name])
  if not student.pseudo:
    raise ValueError(f'control {name!r} needs a student with pseudo-labels; '
                     f'{student.model_dir!r} has none')
  if not (isinstance(steps, int) and steps >= 1):
    raise ValueError(f'steps must be an integer >= 1, got {steps!r}')
  base = dataclasses.replace(student, model_dir=model_dir, train_steps=steps, epochs=None)
  if name == 'no_noise':
    return dataclasses.replace(base, randaug_layers=0, randaug_magnitude=0.0, dropout=0.0,
                               drop_path_rate=0.0)
  rows = rows_per_step(student)
  factor = rows / student.batch_size
  return dataclasses.replace(
      base, pseudo=None, epochs_over='labeled', batch_size=rows,
      base_learning_rate=student.base_learning_rate / factor,
      warmup_epochs=student.warmup_epochs * factor,
      lr_decay_epochs=student.lr_decay_epochs * factor)
