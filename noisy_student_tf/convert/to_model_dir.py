"""Official TF1 EfficientNet / Noisy Student checkpoint -> model dir (see noisy_student_tf.model_dir).

The model dir records the official input convention (RGB 0-255, ImageNet mean/std, bicubic
resize, evaluation crop res/(res+32)) and the ImageNet class names, so ns-eval, ns-label, ns-train
--init_checkpoint and ns-export preprocess converted models the way the checkpoints expect.
Nothing is written unless the whole conversion succeeds: the model dir is assembled in a
temporary sibling folder and renamed into place at the end.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Sequence

from absl import logging

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.convert import imagenet, infer, names, plan as plan_lib
from noisy_student_tf.convert.reader import CheckpointIndex

# What the official checkpoints expect (references/checkpoints.md, section 3.6).
OFFICIAL_INPUT = model_dir_lib.InputConvention(
    mean=model_dir_lib.IMAGENET_MEAN, std=model_dir_lib.IMAGENET_STD, resize_method='bicubic_tf1',
    crop_padding=32)


@dataclasses.dataclass(frozen=True)
class ConversionReport:
  """What a conversion did: where from and to, which model, which weights, what was skipped."""
  checkpoint: str
  model_dir: str
  model: str
  resolution: int
  num_classes: int
  scope: str
  weights_source: str          # what final/ema.weights.h5 holds: 'ExponentialMovingAverage' | 'raw'
  num_weights: int             # model variables filled (each from one checkpoint variable)
  num_parameters: int
  ignored: Dict[str, str]      # checkpoint variable -> why it was not used
  seconds: float

  def to_json(self):
    return dataclasses.asdict(self)


def convert_checkpoint(checkpoint, model_dir, *, model=None, resolution=None, weights='ema',
                       class_names: Optional[Sequence[str]] = None,
                       overwrite=False) -> ConversionReport:
  """Converts an official TF1 EfficientNet checkpoint into a complete model dir.

  checkpoint: a checkpoint prefix (e.g. .../noisy_student_efficientnet-b0/model.ckpt), its .index
    file, or the folder holding it.
  model_dir: the model dir to write (must not exist or be empty, unless overwrite).
  model: variant name ('efficientnet-b3', 'l2-475', ...); default inferred from the checkpoint's
    scope and shapes.  resolution: input size recorded in config.json (default the variant's).
  weights: 'ema' (default) serves the /ExponentialMovingAverage shadows when present, as the
    official evaluation does; 'raw' serves the raw values.  final/ema.weights.h5 holds the served
    weights, final/raw.weights.h5 always the raw values.
  class_names: names of the classifier's outputs; default the ImageNet synsets for 1000/1001.
  Returns a ConversionReport.  Raises CheckpointError (a ValueError) naming the variable when the
  checkpoint does not fit, ValueError for bad arguments; in both cases nothing is written.
  """
  start = time.time()
  model_dir = os.path.abspath(os.fspath(model_dir))
  if weights not in plan_lib.WEIGHT_SOURCES:
    raise ValueError(f'weights must be one of {plan_lib.WEIGHT_SOURCES}, got {weights!r}')
  if os.path.exists(model_dir) and not overwrite and (
      not os.path.isdir(model_dir) or os.listdir(model_dir)):
    raise ValueError(f'model dir {model_dir!r} exists and is not empty; pass overwrite to replace it')
  index = CheckpointIndex(checkpoint)
  config = infer.infer_config(index.shapes, model=model, resolution=resolution,
                              path_hint=index.prefix)
  scope = infer.scope_of(index.shapes)
  layout = names.official_layout(config, scope)
  plan = plan_lib.make_plan(index.shapes, index.dtypes, layout, weights)
  if class_names is None and config.num_classes in (1000, 1001):
    class_names = imagenet.imagenet_class_names(config.num_classes)
  if class_names is not None:
    class_names = [str(c) for c in class_names]
    if len(class_names) != config.num_classes:
      raise ValueError(f'{len(class_names)} class names given, the checkpoint has '
                       f'{config.num_classes} classes')
  logging.info('Converting %s (%s, scope %s, %d classes, %.1fM parameters); served weights: %s; '
               'ignoring %s', index.prefix, config.name, scope, config.num_classes,
               plan.num_values / 1e6, plan.primary_source, plan.ignored_summary())

  keras_model = models.build_from_config(config)
  variables = {v.path: v for v in keras_model.weights}
  if set(variables) != set(plan.raw):
    raise RuntimeError('internal: the model weights and the official layout differ: '
                       f'{sorted(set(variables) ^ set(plan.raw))[:5]}')
  parent = os.path.dirname(model_dir)
  os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(model_dir)}.tmp-')
  try:
    for which, mapping in (('ema', plan.primary), ('raw', plan.raw)):
      if which == 'raw' and mapping == plan.primary:
        shutil.copyfile(model_dir_lib.weights_path(work, 'ema'),
                        model_dir_lib.weights_path(work, 'raw'))
        continue
      _fill(variables, mapping, index, which)
      model_dir_lib.save_weights(work, keras_model, which)
    report = ConversionReport(
        checkpoint=index.prefix, model_dir=model_dir, model=config.name,
        resolution=config.resolution, num_classes=config.num_classes, scope=scope,
        weights_source=plan.primary_source, num_weights=len(plan.raw),
        num_parameters=plan.num_values, ignored=plan.ignored, seconds=0.0)
    training = {
        'converted_from': index.prefix, 'scope': scope, 'converter': 'noisy_student_tf.convert',
        'final/ema.weights.h5': plan.primary_source, 'final/raw.weights.h5': 'raw',
        'ignored_variables': plan.ignored_summary()}
    step = _global_step(index)
    if step is not None:
      training['global_step'] = step
    model_dir_lib.write_config(work, model_dir_lib.ModelDirConfig(
        model=config, class_names=class_names, input=OFFICIAL_INPUT, training=training))
    _move_into_place(work, model_dir)
  except BaseException:
    shutil.rmtree(work, ignore_errors=True)
    raise
  report = dataclasses.replace(report, seconds=time.time() - start)
  logging.info('Wrote %s in %.1f s', model_dir, report.seconds)
  return report


def _global_step(index):
  """Returns the checkpoint's integer `global_step`, or None when it has none."""
  if index.shapes.get('global_step') == () and index.dtypes['global_step'].kind in 'iu':
    return int(index.read('global_step'))
  return None


def _fill(variables, mapping, index, which):
  """Assigns every Keras variable ({path: variable}) from the checkpoint names in `mapping`."""
  total = sum(_size(v) for v in variables.values())
  done, next_log = 0, 0.1
  for path, name in mapping.items():
    var = variables[path]
    var.assign(index.read(name))
    done += _size(var)
    if done >= next_log * total:
      logging.info('  %s weights: %.0f%% (%d of %d values)', which, 100 * done / total, done, total)
      next_log += 0.1


def _size(var):
  n = 1
  for d in var.shape:
    n *= int(d)
  return n


def _move_into_place(work, model_dir):
  """Renames the finished folder `work` to `model_dir`, replacing an old one last."""
  if os.path.isdir(model_dir) and not os.listdir(model_dir):
    os.rmdir(model_dir)
  if os.path.exists(model_dir):
    old = tempfile.mkdtemp(dir=os.path.dirname(model_dir),
                           prefix=f'.{os.path.basename(model_dir)}.old-')
    os.rmdir(old)
    os.replace(model_dir, old)
    os.replace(work, model_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(work, model_dir)
