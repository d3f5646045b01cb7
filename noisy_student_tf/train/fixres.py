"""FixRes: fine-tune a trained model at its test resolution (Touvron et al., "Fixing the train-test
resolution discrepancy", NeurIPS 2019; the Noisy Student paper fine-tunes L2 trained at 475 px at
800 px for 1.5 epochs on unaugmented labeled images).

Training on random-resized crops makes objects look larger than in center-cropped test images;
evaluating at a higher resolution compensates, but shifts the activation statistics. This stage
rebuilds the model at the new resolution and, on unaugmented (evaluation-crop) labeled images,
re-estimates every batch-norm layer's moving statistics and trains only the classifier (`logits`)
or, with `trainable_from=LAYER`, every layer from LAYER on (in model.layers order). All other
weights, including the frozen batch-norm scales and offsets, stay exactly as they were.
The result is a complete model dir whose config says the new resolution.
"""

import dataclasses
import logging
import math
import os
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.settings import setting

log = logging.getLogger(__name__)

CLASSIFIER = 'logits'


@dataclasses.dataclass(frozen=True)
class FixResConfig:
  """One FixRes fine-tuning run.

  source_dir: the trained model dir (its `weights` are the start). model_dir: where the fine-tuned
  model dir goes (must differ from source_dir). labeled: labeled source spec. resolution: the new
  input size. epochs over the labeled examples, or `steps` (overrides epochs). trainable_from:
  None (classifier + BN statistics) or a layer name. Optimiser: SGD with `momentum`, cosine
  decay from `learning_rate` to 0. bn_momentum: the moving-average momentum used while
  re-estimating the statistics (lower than training's 0.99 so that short runs converge).
  """
  source_dir: str
  model_dir: str
  labeled: str
  resolution: int = setting(0, 'FixRes: fine-tune --init_checkpoint at this test resolution on '
                            'unaugmented --labeled images, writing --model_dir (0: off, train '
                            'normally). Paper: L2 trained at 475, fine-tuned at 800.')
  epochs: float = setting(1.5, 'FixRes: fine-tuning length in epochs of --labeled.')
  steps: Optional[int] = setting(None, 'FixRes: fine-tuning length in steps (overrides epochs).')
  trainable_from: Optional[str] = None
  batch_size: int = 64
  learning_rate: float = setting(0.01, 'FixRes: SGD learning rate (cosine decay to 0).')
  momentum: float = setting(0.9, 'FixRes: SGD momentum.')
  bn_momentum: float = setting(0.9, 'FixRes: batch-norm momentum while re-estimating the '
                               'statistics at the new resolution.')
  label_smoothing: float = setting(0.0, 'FixRes: label smoothing of the fine-tuning targets.')
  weights: str = 'ema'
  data_dir: Optional[str] = None
  label_offset: int = 0
  seed: int = 0
  log_every: int = 50

  def validate(self):
    """Raises ValueError naming the first bad field (cheap checks, before any data or model)."""
    if not self.source_dir:
      raise ValueError('source_dir (the trained model dir to fine-tune; ns-train: '
                       '--init_checkpoint) is required')
    if not model_dir_lib.is_complete(self.source_dir):
      raise ValueError(f'source_dir {self.source_dir!r} is not a complete model dir '
                       '(config.json and final/{ema,raw}.weights.h5 expected)')
    if not self.model_dir:
      raise ValueError('model_dir (where the fine-tuned model goes) is required')
    if os.path.abspath(self.model_dir) == os.path.abspath(self.source_dir):
      raise ValueError(f'model_dir must differ from source_dir {self.source_dir!r}: FixRes writes '
                       'a new model dir and keeps the trained one')
    if not self.labeled:
      raise ValueError('labeled (a labeled source spec such as folder:PATH) is required')
    if not (isinstance(self.resolution, int) and self.resolution > 0):
      raise ValueError(f'resolution must be an integer > 0, got {self.resolution!r}')
    if self.steps is None and not self.epochs > 0:
      raise ValueError(f'epochs must be > 0, got {self.epochs!r}')
    if self.steps is not None and not (isinstance(self.steps, int) and self.steps > 0):
      raise ValueError(f'steps must be an integer > 0, got {self.steps!r}')
    for name in ('batch_size', 'log_every'):
      if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
        raise ValueError(f'{name} must be an integer > 0, got {getattr(self, name)!r}')
    if not self.learning_rate >= 0:
      raise ValueError(f'learning_rate must be >= 0, got {self.learning_rate!r}')
    if not 0 <= self.bn_momentum < 1:
      raise ValueError(f'bn_momentum must be in [0, 1), got {self.bn_momentum!r}')
    if not 0 <= self.label_smoothing < 1:
      raise ValueError(f'label_smoothing must be in [0, 1), got {self.label_smoothing!r}')
    if self.weights not in model_dir_lib.WEIGHT_FILES:
      raise ValueError(f'weights must be one of {sorted(model_dir_lib.WEIGHT_FILES)}, got '
                       f'{self.weights!r}')


def batchnorm_layers(model):
  """Every keras BatchNormalization layer of `model` (recursing into nested layers)."""
  found = []

  def visit(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
      found.append(layer)
    for sub in getattr(layer, '_layers', []) or []:
      visit(sub)
  for layer in model.layers:
    visit(layer)
  return found


def trainable_variables(model, trainable_from=None):
  """The variables FixRes trains: the classifier's, or every trainable variable of the layers
  from `trainable_from` on. Raises ValueError naming an unknown layer."""
  names = [layer.name for layer in model.layers]
  start = names.index(CLASSIFIER) if trainable_from is None else None
  if trainable_from is not None:
    if trainable_from not in names:
      raise ValueError(f'trainable_from {trainable_from!r} is not a layer of the model; layers '
                       f'are e.g. {names[:3]} ... {names[-4:]}')
    start = names.index(trainable_from)
  elif CLASSIFIER not in names:
    raise ValueError(f'the model has no {CLASSIFIER!r} layer (built with include_top=False?)')
  variables, seen = [], set()
  for layer in model.layers[start:]:
    for v in layer.trainable_variables:
      if id(v) not in seen:
        seen.add(id(v))
        variables.append(v)
  return variables


def _steps(config, source):
  if config.steps is not None:
    return config.steps
  n = source.num_examples
  if n is None:  # count the records (cheap: images are not decoded)
    n = int(source.dataset.reduce(np.int64(0), lambda c, _: c + 1).numpy())
  if not n:
    raise ValueError(f'{config.labeled!r} is empty')
  return max(1, math.ceil(config.epochs * n / config.batch_size))


def finetune(config: FixResConfig) -> dict:
  """Runs FixRes fine-tuning and writes the complete model dir config.model_dir.

  Returns {'model_dir', 'resolution', 'steps', 'loss' (mean of the last logged window),
  'seconds', 'trainable_variables' (names), 'bn_layers' (count)}.
  """
  from noisy_student_tf.data import order, pipeline, record_stats, sources  # pylint: disable=import-outside-toplevel
  config.validate()
  parent = model_dir_lib.read_config(config.source_dir)
  source = sources.open_source(config.labeled, data_dir=config.data_dir,
                               label_offset=config.label_offset)
  num_classes = parent.model.num_classes
  source = record_stats.describe(source, label_offset=config.label_offset, num_classes=num_classes,
                                 cache_dir=os.path.join(config.model_dir, 'source_stats'))
  if source.num_classes is not None and source.num_classes != num_classes:
    raise ValueError(f'{config.labeled!r} has {source.num_classes} classes but the model in '
                     f'{config.source_dir!r} has {num_classes}')
  num_steps = _steps(config, source)
  # No dropout / stochastic depth: the forward pass differs from inference only in BN statistics.
  model, _ = model_dir_lib.load_model(config.source_dir, weights=config.weights,
                                      resolution=config.resolution, dropout=0.0,
                                      drop_path_rate=0.0, bn_momentum=config.bn_momentum)
  variables = trainable_variables(model, config.trainable_from)
  bn = batchnorm_layers(model)
  for layer in bn:  # frozen BN layers would not update their statistics
    layer.trainable = True
  # Files / record chunks permuted every epoch before the buffer (a class-ordered folder would
  # otherwise fine-tune BN statistics a few classes at a time).
  shuffled = dataclasses.replace(source, dataset=order.shuffled_stream(source, seed=config.seed))
  dataset = pipeline.make_eval_dataset(
      shuffled, batch_size=config.batch_size, resolution=config.resolution,
      convention=parent.input, small_image=parent.model.small_image)
  schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, num_steps)
  optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
  optimizer.build(variables)
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                 label_smoothing=config.label_smoothing)

  @tf.function(autograph=False)
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = loss_fn(tf.one_hot(labels, num_classes), logits)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  writer = tf.summary.create_file_writer(os.path.join(config.model_dir, 'logs', 'fixres'))
  log.info('FixRes: %s at %d px, %d steps, training %d variables (%s) and %d BN layers\' '
           'statistics', config.source_dir, config.resolution, num_steps, len(variables),
           config.trainable_from or CLASSIFIER, len(bn))
  start, window = time.time(), []
  for i, batch in enumerate(dataset.take(num_steps), start=1):
    window.append(float(step(batch['image'], batch['label'])))
    if i % config.log_every == 0 or i == num_steps:
      with writer.as_default():
        tf.summary.scalar('fixres/loss', np.mean(window), step=i)
      log.info('FixRes step %d/%d: loss %.4f (%.1f s)', i, num_steps, np.mean(window),
               time.time() - start)
      last_loss, window = float(np.mean(window)), []
  writer.flush()
  for which in ('raw', 'ema'):  # weights first, config last: is_complete only when all is there
    model_dir_lib.save_weights(config.model_dir, model, which)
  training = {'fixres': {**dataclasses.asdict(config), 'steps': num_steps},
              'parent': os.path.abspath(config.source_dir),
              'parent_training': parent.training}
  model_dir_lib.write_config(config.model_dir, dataclasses.replace(
      parent, model=dataclasses.replace(parent.model, resolution=config.resolution),
      training=training))
  result = {'model_dir': config.model_dir, 'resolution': config.resolution, 'steps': num_steps,
            'loss': last_loss, 'seconds': time.time() - start,
            'trainable_variables': [v.path for v in variables], 'bn_layers': len(bn)}
  log.info('FixRes done: %s', result)
  return result
