"""The training loop of ns-train: a custom tf.distribute loop (a tf.function step run by
`strategy.run` over a distributed dataset), so that it works under every strategy it offers,
including MultiWorkerMirroredStrategy where Keras 3's `model.fit` does not.

`train(TrainConfig(...))` trains, checkpoints every `checkpoint_every` steps, resumes from the
latest checkpoint in MODEL_DIR/ckpt at exactly the same step and learning rate, and finally writes a
complete model dir (config.json, final/ema.weights.h5, final/raw.weights.h5; see model_dir.py).
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf import progress as progress_lib
from noisy_student_tf import settings
from noisy_student_tf.settings import setting
from noisy_student_tf.data import batch_augment, preprocessing
from noisy_student_tf.train import callbacks, losses, optim
from noisy_student_tf.train import strategy as strategy_lib

log = logging.getLogger('noisy_student_tf.train')

PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
EPOCHS_OVER = ('labeled', 'pseudo')
RANDAUG_ON = ('host', 'accelerator')
CKPT_DIR = 'ckpt'
RESULT_FILE = 'train_result.json'
METRIC_KEYS = ('loss', 'weight_decay', 'loss_labeled', 'accuracy', 'weight_sum')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of one ns-train run (defaults: the paper's supervised EfficientNet recipe).

  Each field's help (settings.help_of) says what it does; ns-train has one flag per field and
  ns-pipeline one per field for teachers and students (--X, --teacher.X, --student.X).
  """
  # Files.
  model_dir: str = setting('', 'Where checkpoints (ckpt/), TensorBoard logs and the trained '
                           'model go.')
  init_checkpoint: Optional[str] = setting(
      None, 'A model dir whose EMA weights start this run (when there is no checkpoint yet): '
      'variables are matched by name and shape, so a model with other classes (e.g. a converted '
      '1000-class Noisy Student checkpoint) gives everything but its classifier; the log lists '
      'what was loaded and what was not. Its input convention is kept.')
  # Data.
  labeled: str = setting('', 'Labeled training source: folder:PATH, tfds:NAME[:SPLIT], '
                         'tfrecord:GLOB, images:GLOB, digits[:train|test].')
  pseudo: Optional[str] = setting(None, 'Pseudo-labeled records for a student: pseudo:GLOB '
                                  '(written by ns-label / ns-filter).')
  unlabeled_ratio: float = setting(1.0, 'Pseudo-labeled rows per labeled row in each batch '
                                   '(paper: 1 for B0, 3 for B7 and larger).')
  eval_data: Optional[str] = setting(None, 'Labeled source evaluated with the EMA weights (every '
                                     '--eval_every steps, and at the end).')
  data_dir: Optional[str] = setting(None, 'tensorflow-datasets data dir for tfds: sources.')
  label_offset: int = setting(0, 'Subtracted from stored labels of tfrecord: sources (1 for '
                              '1-based ImageNet records).')
  num_classes: Optional[int] = setting(None, 'Class count of sources that do not say it '
                                       '(tfrecord:); default: from the label scan.')
  scan_records: bool = setting(True, 'Read the labels of tfrecord: sources once (cached) to count '
                               'examples and classes and check labels against --label_offset / '
                               '--num_classes.')
  source_cache_dir: Optional[str] = setting(None, 'Where label scans are cached (default: '
                                            'MODEL_DIR/source_stats).', result=False)
  flip: bool = setting(True, 'Random horizontal flips of training images (turn off for digits '
                       'and text).')
  skip_corrupt: bool = setting(False, 'Skip undecodable labeled images instead of failing.')
  max_image_pixels: int = setting(
      preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Refuse images with more pixels (height x width, '
      'read from the header before decoding) like corrupt ones: skipped with --skip_corrupt, '
      'else the run stops naming them. 0: no limit.')
  # Model.
  model: str = setting('efficientnet-b0', 'Model name: efficientnet-b0 ... efficientnet-b7, '
                       'efficientnet-l2, efficientnet-l2-475 (or short b0).')
  width: Optional[float] = setting(None, 'Width multiplier override (default: the named model\'s).')
  depth: Optional[float] = setting(None, 'Depth multiplier override (default: the named model\'s).')
  resolution: Optional[int] = setting(None, 'Training resolution in pixels (default: the named '
                                      'model\'s).')
  dropout: Optional[float] = setting(None, 'Dropout rate before the classifier (default: the '
                                     'named model\'s).')
  drop_path_rate: Optional[float] = setting(None, 'Stochastic-depth drop rate of the last block '
                                            '(default 0.2 = survival 0.8).')
  small_image: bool = setting(False, 'Stride 1 in stages 2 and 3, for 32x32 images (CIFAR, SVHN).')
  bn_momentum: Optional[float] = setting(None, 'Batch-norm moving-average momentum (default '
                                         '0.99; lower suits short runs).')
  # Length.
  batch_size: int = setting(128, 'Global labeled batch size (summed over all replicas).')
  eval_batch_size: int = setting(256, 'Batch size of evaluation.', result=False)
  train_steps: Optional[int] = setting(None, 'Training length in steps (give this or --epochs).')
  epochs: Optional[float] = setting(None, 'Training length in passes over the examples '
                                    '--epochs_over names (give this or --train_steps).')
  epochs_over: str = setting('labeled', 'What --epochs counts passes over: the labeled examples '
                             '(batch_size rows a step) or the pseudo-labeled ones '
                             '(unlabeled_ratio x batch_size rows a step). Warmup and decay '
                             'epochs always count labeled examples.', choices=EPOCHS_OVER)
  steps_per_epoch: Optional[int] = setting(None, 'Steps per epoch, for sources whose size is '
                                           'unknown (overrides the count).')
  # Optimisation.
  optimizer: str = setting('rmsprop', 'Optimizer.', choices=optim.OPTIMIZERS)
  base_learning_rate: float = setting(0.016, 'Learning rate per 256 labeled examples (scaled by '
                                      'batch_size / 256).')
  lr_schedule: str = setting('exponential', 'exponential = x lr_decay_factor every '
                             'lr_decay_epochs; cosine to 0; constant.', choices=optim.SCHEDULES)
  lr_decay_epochs: float = setting(2.4, 'Epochs between exponential decays (paper: 2.4 for '
                                   '350-epoch runs, 4.8 for 700).')
  lr_decay_factor: float = setting(0.97, 'Exponential decay factor (paper: 0.97).')
  warmup_epochs: float = setting(5.0, 'Linear learning-rate warmup, in epochs of the labeled data.')
  rmsprop_decay: float = setting(0.9, 'RMSProp decay of the squared-gradient average (rho).')
  momentum: float = setting(0.9, 'Momentum of RMSProp / SGD.')
  epsilon: float = setting(1e-3, 'Optimizer epsilon (RMSProp: inside the square root).')
  weight_decay: float = setting(1e-5, 'L2 weight decay on convolution and dense kernels.')
  label_smoothing: float = setting(0.1, 'Label smoothing of the labeled one-hot targets.')
  pseudo_label_smoothing: Optional[float] = setting(
      None, 'Label smoothing of hard (one-hot) pseudo-label targets; unset: --label_smoothing, '
      'as the official code. Soft pseudo-labels are never smoothed.')
  ema_decay: float = setting(0.9999, 'Decay of the exponential moving average of the weights '
                             '(used for eval, labeling and export).')
  # Noise.
  randaug_layers: int = setting(0, 'RandAugment: number of ops per image (0 = off).')
  randaug_magnitude: float = setting(0.0, 'RandAugment magnitude on the official scale (paper: '
                                     '27 for L2).')
  randaug_on: str = setting(
      'host', 'Where RandAugment runs: host = per image in the tf.data pipeline (CPU cores); '
      'accelerator = on whole batches in the training step, after the batch is formed, each image '
      'still drawing its own ops (data/batch_augment.py; the same ops, op choice and results): '
      'for hosts with too few CPU cores per accelerator to keep it busy (another random stream '
      'than host).', choices=RANDAUG_ON)
  pseudo_loss_weighting: str = setting(
      'per_image', 'How pseudo-labeled rows weigh: per_image = every row of the combined batch '
      'alike, lab_loss + (U/B) x unl_loss (the official code); per_stream = mean CE(labeled) + '
      "mean CE(pseudo) (the paper's text). Same when U = B.", choices=losses.WEIGHTINGS)
  # Execution.
  precision: str = setting('float32', 'Training precision.', choices=PRECISIONS)
  jit_compile: bool = setting(False, 'Compile the forward and backward pass with XLA.')
  strategy: str = setting('default', 'tf.distribute strategy (multi_worker reads TF_CONFIG).',
                          choices=strategy_lib.STRATEGIES)
  tpu: Optional[str] = setting(None, 'TPU name or address for --strategy=tpu (empty: local TPU '
                               'VM).', result=False)
  sync_batchnorm: bool = setting(False, 'Batch-norm statistics over the global batch instead of '
                                 'per replica.')
  steps_per_execution: int = setting(1, 'Training steps per tf.function call (less Python '
                                     'overhead).', result=False)
  trainable_from: Optional[str] = setting(None, 'Freeze every layer before this layer name '
                                          '(fine-tuning).')
  seed: int = setting(0, 'Random seed of initialisation and data order (ns-pipeline adds 1000 x '
                      'the generation).')
  deterministic: bool = setting(
      False, 'Reproducible training: TensorFlow op determinism, so that the same command twice '
      'gives the same weights and reports on one machine (the augmenting tf.data maps then run '
      'their random ops one image at a time: slower).', result=False)
  checkpoint_every: int = setting(1000, 'Steps between checkpoints.', result=False)
  keep_checkpoints: int = setting(3, 'How many recent checkpoints to keep.', result=False)
  log_every: int = setting(100, 'Steps between log lines / TensorBoard summaries.', result=False)
  eval_every: int = setting(0, 'Steps between evaluations on --eval_data (0: only at the end).',
                            result=False)
  progress: str = progress_lib.mode_setting()

  def hard_pseudo_label_smoothing(self):
    """The label smoothing applied to hard (one-hot) pseudo-labels: pseudo_label_smoothing, or
    label_smoothing when unset."""
    if self.pseudo_label_smoothing is None:
      return self.label_smoothing
    return self.pseudo_label_smoothing

  def validate(self):
    """Raises ValueError naming the first bad field; cheap checks only (no data, no devices)."""
    if not self.model_dir:
      raise ValueError('model_dir is required (where checkpoints and the trained model go)')
    if not self.labeled:
      raise ValueError('labeled is required: a labeled source spec such as folder:PATH')
    if (self.train_steps is None) == (self.epochs is None):
      raise ValueError(f'give exactly one of train_steps and epochs, got train_steps='
                       f'{self.train_steps!r} epochs={self.epochs!r}')
    if self.train_steps is not None and not (isinstance(self.train_steps, int) and self.train_steps > 0):
      raise ValueError(f'train_steps must be an integer > 0, got {self.train_steps!r}')
    if self.epochs is not None and not self.epochs > 0:
      raise ValueError(f'epochs must be > 0, got {self.epochs!r}')
    positive = ('batch_size', 'eval_batch_size', 'checkpoint_every', 'keep_checkpoints',
                'log_every', 'steps_per_execution')
    for name in positive:
      value = getattr(self, name)
      if not (isinstance(value, int) and value > 0):
        raise ValueError(f'{name} must be an integer > 0, got {value!r}')
    if self.steps_per_epoch is not None and not self.steps_per_epoch > 0:
      raise ValueError(f'steps_per_epoch must be > 0, got {self.steps_per_epoch!r}')
    settings.check_choices(self)
    if self.epochs_over == 'pseudo' and not self.pseudo:
      raise ValueError("epochs_over='pseudo' counts passes over pseudo-labeled records, but no "
                       'pseudo source is set')
    if not self.base_learning_rate > 0:
      raise ValueError(f'base_learning_rate must be > 0, got {self.base_learning_rate!r}')
    if not 0 <= self.ema_decay < 1:
      raise ValueError(f'ema_decay must be in [0, 1), got {self.ema_decay!r}')
    if not 0 <= self.label_smoothing < 1:
      raise ValueError(f'label_smoothing must be in [0, 1), got {self.label_smoothing!r}')
    if self.pseudo_label_smoothing is not None and not 0 <= self.pseudo_label_smoothing < 1:
      raise ValueError(f'pseudo_label_smoothing must be in [0, 1) or unset (= label_smoothing), '
                       f'got {self.pseudo_label_smoothing!r}')
    if self.weight_decay < 0:
      raise ValueError(f'weight_decay must be >= 0, got {self.weight_decay!r}')
    if self.warmup_epochs < 0:
      raise ValueError(f'warmup_epochs must be >= 0, got {self.warmup_epochs!r}')
    if self.pseudo and not self.unlabeled_ratio > 0:
      raise ValueError(f'unlabeled_ratio must be > 0 with pseudo labels, got {self.unlabeled_ratio!r}')
    if self.num_classes is not None and not (isinstance(self.num_classes, int) and
                                             self.num_classes >= 2):
      raise ValueError(f'num_classes must be an integer >= 2, got {self.num_classes!r}')
    if self.eval_every < 0:
      raise ValueError(f'eval_every must be >= 0, got {self.eval_every!r}')
    if self.init_checkpoint and not model_dir_lib.is_complete(self.init_checkpoint):
      raise ValueError(f'init_checkpoint {self.init_checkpoint!r} is not a complete model dir '
                       '(config.json and final/ema.weights.h5 expected)')
    models.make_config(self.model, 10, **self.model_overrides())  # raises on bad model settings

  def model_overrides(self):
    """The EfficientNetConfig overrides given (fields left None are the named variant's)."""
    names = ('width', 'depth', 'resolution', 'dropout', 'drop_path_rate', 'bn_momentum')
    out = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
    out['small_image'] = self.small_image
    return out


@dataclasses.dataclass
class _Data:
  labeled: object
  pseudo: object
  evaluation: object
  num_classes: int
  class_names: object


def source_cache_dir(config):
  """Where the label scans of config's record sources are cached."""
  return config.source_cache_dir or os.path.join(config.model_dir, 'source_stats')


def _open_sources(config):
  """Opens every source and checks they agree; fails before any expensive work."""
  from noisy_student_tf.data import record_stats, sources
  cache = source_cache_dir(config)
  labeled = sources.open_source(config.labeled, data_dir=config.data_dir,
                                label_offset=config.label_offset)
  labeled = record_stats.describe(labeled, label_offset=config.label_offset,
                                  num_classes=config.num_classes, cache_dir=cache,
                                  scan=config.scan_records)
  if labeled.num_examples == 0:
    raise ValueError(f'labeled source {config.labeled!r} is empty')
  if not labeled.num_classes or labeled.num_classes < 2:
    raise ValueError(f'labeled source {config.labeled!r} must have >= 2 classes, got '
                     f'{labeled.num_classes!r}; give --num_classes')
  if config.num_classes is not None and labeled.num_classes != config.num_classes:
    raise ValueError(f'labeled source {config.labeled!r} has {labeled.num_classes} classes, '
                     f'--num_classes={config.num_classes}')
  pseudo = None
  if config.pseudo:
    pseudo = sources.open_source(config.pseudo, data_dir=config.data_dir)
    pseudo = record_stats.describe(pseudo, cache_dir=cache, scan=config.scan_records)
    if pseudo.num_examples == 0:
      raise ValueError(f'pseudo-label source {config.pseudo!r} is empty')
    if pseudo.num_classes is not None and pseudo.num_classes != labeled.num_classes:
      raise ValueError(f'pseudo labels {config.pseudo!r} have {pseudo.num_classes} classes but the '
                       f'labeled data {config.labeled!r} has {labeled.num_classes}')
  evaluation = None
  if config.eval_data:
    evaluation = sources.open_source(config.eval_data, data_dir=config.data_dir,
                                     label_offset=config.label_offset)
    evaluation = record_stats.describe(evaluation, label_offset=config.label_offset,
                                       num_classes=labeled.num_classes, cache_dir=cache,
                                       scan=config.scan_records)
    if evaluation.num_examples == 0:
      raise ValueError(f'eval source {config.eval_data!r} is empty')
    if evaluation.num_classes is not None and evaluation.num_classes != labeled.num_classes:
      raise ValueError(f'eval data {config.eval_data!r} has {evaluation.num_classes} classes but '
                       f'the labeled data {config.labeled!r} has {labeled.num_classes}')
  if config.init_checkpoint:
    init = model_dir_lib.read_config(config.init_checkpoint)
    if init.model.num_classes != labeled.num_classes:
      log.info('init_checkpoint %r has %d classes, the labeled data %d: its classifier is left '
               'out, a new one is initialised', config.init_checkpoint, init.model.num_classes,
               labeled.num_classes)
  return _Data(labeled, pseudo, evaluation, labeled.num_classes, labeled.class_names)


def steps_per_epoch(config, labeled):
  """Steps in one pass over the labeled examples at the global batch (config override first)."""
  if config.steps_per_epoch:
    return float(config.steps_per_epoch)
  if not labeled.num_examples:
    raise ValueError(f'the size of {config.labeled!r} is unknown: set steps_per_epoch')
  return labeled.num_examples / config.batch_size


def total_steps(config, labeled, pseudo=None):
  """The run's length in steps: train_steps, or ceil(epochs * steps per epoch), an epoch being a
  pass over the labeled examples or, with epochs_over='pseudo', over the pseudo-labeled ones."""
  if config.train_steps is not None:
    return config.train_steps
  if config.epochs_over == 'pseudo':
    if pseudo is None or not pseudo.num_examples:
      raise ValueError(f'the size of the pseudo-labeled source {config.pseudo!r} is unknown: '
                       'give train_steps')
    rows = _rows_per_batch(config) - config.batch_size
    return max(1, int(math.ceil(config.epochs * pseudo.num_examples / rows)))
  return max(1, int(math.ceil(config.epochs * steps_per_epoch(config, labeled))))


def make_schedule(config, labeled, num_steps):
  """The LearningRate for `config`: base rate scaled by batch / 256, warmup and decay in epochs."""
  epoch = steps_per_epoch(config, labeled)
  return optim.LearningRate(
      base=config.base_learning_rate * config.batch_size / 256.0, total_steps=num_steps,
      warmup_steps=int(round(config.warmup_epochs * epoch)), kind=config.lr_schedule,
      decay_steps=max(1.0, config.lr_decay_epochs * epoch), decay_factor=config.lr_decay_factor)


def _rows_per_batch(config):
  if not config.pseudo:
    return config.batch_size
  return config.batch_size + int(round(config.unlabeled_ratio * config.batch_size))


def _train_dataset_fn(config, data, convention, resolution, small_image, strategy, first_step,
                      num_steps=None, decode_counter=None):
  """Returns the function distribute_datasets_from_function calls once per worker.

  Every input pipeline draws the same global batches (same seed) and keeps the slices of its own
  replicas, so N replicas see exactly the examples one device would, and the per-example weights
  (1/B of the global batch) make the summed replica losses the global mean.  With several input
  pipelines (multi-worker) each one decodes and augments only its own share of every global batch
  (pipeline.make_train_dataset's num_shards); with skip_corrupt, whose skipped images would shift
  one pipeline's rows only, each decodes the whole batch and keeps its slices.  Sharded
  pipelines stop after the run's last step (num_steps, if given): nothing beyond it is decoded.
  decode_counter: optional pipeline.DecodeCounter of this process' decoded images.
  """
  from noisy_student_tf.data import pipeline
  rows = _rows_per_batch(config)
  replicas = strategy.num_replicas_in_sync

  def dataset_fn(input_context):
    pipelines = input_context.num_input_pipelines
    shards = pipelines if pipelines > 1 and not config.skip_corrupt else 1
    num_batches = num_steps - first_step if shards > 1 and num_steps else None
    ds = pipeline.make_train_dataset(
        data.labeled, batch_size=config.batch_size, resolution=resolution,
        num_classes=data.num_classes, convention=convention, small_image=small_image,
        randaug_layers=config.randaug_layers, randaug_magnitude=config.randaug_magnitude,
        randaug_on=config.randaug_on,
        label_smoothing=config.label_smoothing, pseudo=data.pseudo,
        hard_pseudo_label_smoothing=config.hard_pseudo_label_smoothing(),
        unlabeled_ratio=config.unlabeled_ratio, seed=config.seed + first_step,
        flip=config.flip, skip_corrupt=config.skip_corrupt, max_image_pixels=config.max_image_pixels,
        num_shards=shards, shard_index=input_context.input_pipeline_id if shards > 1 else 0,
        decode_counter=decode_counter, num_batches=num_batches)
    local = replicas // pipelines
    if local == replicas // shards:  # the batches are this pipeline's replicas' rows already
      if local == 1:
        return ds
      first, slices = 0, local
    else:
      first, slices = input_context.input_pipeline_id * local, replicas

    def split(*tensors):
      parts = tuple(tf.reshape(t, tf.concat([[slices, rows // replicas], tf.shape(t)[1:]], 0))
                    [first:first + local] for t in tensors)
      return tf.data.Dataset.from_tensor_slices(parts)
    return ds.flat_map(split).prefetch(tf.data.AUTOTUNE)
  return dataset_fn


def _copy_by_path(model, values, what):
  """Assigns numpy `values` {path: array} to the model's variables of the same path and shape.

  Returns the number copied; logs every variable left as initialised (absent or of another
  shape) and every value that matched no variable.  Raises ValueError when nothing matches.
  """
  copied, skipped = 0, []
  for v in model.weights:
    value = values.get(v.path)
    if value is not None and tuple(value.shape) == tuple(v.shape):
      v.assign(value)
      copied += 1
    else:
      reason = 'absent' if value is None else f'shape {tuple(value.shape)} != {tuple(v.shape)}'
      skipped.append(f'{v.path} ({reason})')
  if not copied:
    raise ValueError(f'no variable of {what} matches the model by name and shape')
  if skipped:
    unused = sorted(set(values) - {v.path for v in model.weights})
    log.warning('%s: loaded %d of %d variables; left as initialised: %s%s', what, copied,
                len(model.weights), ', '.join(skipped),
                f'; not used from it: {", ".join(unused)}' if unused else '')
  return copied


def _freeze_before(model, layer_name):
  names = [layer.name for layer in model.layers]
  if layer_name not in names:
    raise ValueError(f'trainable_from {layer_name!r} is not a layer of the model; layers are e.g. '
                     f'{names[:3]} ... {names[-3:]}')
  for layer in model.layers[:names.index(layer_name)]:
    layer.trainable = False


class _Run:
  """The state of one training run inside its strategy: model, optimizer, EMA, step, checkpoint."""

  def __init__(self, config, data, strategy, num_steps, schedule):
    self.config = config
    self.strategy = strategy
    self.replicas = strategy.num_replicas_in_sync
    model_config = models.make_config(config.model, data.num_classes, **config.model_overrides())
    self.model_config = model_config
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      self.model = models.build_from_config(model_config)
      if config.trainable_from:
        _freeze_before(self.model, config.trainable_from)
      if config.sync_batchnorm and self.replicas > 1:
        for layer in self.model.layers:
          if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step',
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.optimizer = optim.make_optimizer(
          config.optimizer, lambda: schedule(self.step), rho=config.rmsprop_decay,
          momentum=config.momentum, epsilon=config.epsilon, precision=config.precision)
      self.optimizer.build(self.model.trainable_variables)
      self.ema = optim.WeightAverage(optim.averaged_variables(self.model), config.ema_decay)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          ema=self.ema, step=self.step)

  def train_chunk_fn(self, convention=None):
    """Returns a tf.function (iterator, n) -> summed metrics of n steps.  convention: the
    model_dir.InputConvention the step normalises with when it augments (randaug_on=
    'accelerator'; default InputConvention())."""
    config, model, optimizer = self.config, self.model, self.optimizer
    noise = _step_noise(config, self.model_config, convention or model_dir_lib.InputConvention())
    strategy, replicas = self.strategy, self.replicas
    pseudo_rows = _rows_per_batch(config) - config.batch_size
    trainable = model.trainable_variables
    scale = config.precision == 'mixed_float16'

    def forward_backward(images, targets, weights):
      is_labeled = losses.labeled_mask(weights, config.batch_size, pseudo_rows)
      weights = losses.row_weights(weights, config.batch_size, pseudo_rows,
                                   config.pseudo_loss_weighting)
      with tf.GradientTape() as tape:
        logits = tf.cast(model(images, training=True), tf.float32)
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        data_loss = tf.reduce_sum(weights * ce)
        # The L2 term is summed over replicas by the gradient all-reduce: add 1/replicas of it.
        wd = optim.weight_decay_loss(trainable, config.weight_decay) / replicas
        loss = data_loss + wd
        scaled = optimizer.scale_loss(loss) if scale else loss
      grads = tape.gradient(scaled, trainable)
      correct = tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(targets, 1)), tf.float32)
      metrics = {'loss': data_loss, 'weight_decay': wd,
                 'loss_labeled': tf.reduce_sum(weights * ce * is_labeled),
                 'accuracy': tf.reduce_sum(weights * correct * is_labeled),
                 'weight_sum': tf.reduce_sum(weights * is_labeled)}
      return grads, metrics

    if config.jit_compile:
      forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, targets, weights, *unused):
      if noise is not None:
        # Stateless draws keyed by (seed, step, replica): every replica and step its own, the
        # same again after a resume.
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        images = noise(images, tf.stack([tf.constant(config.seed, tf.int64),
                                         self.step * replicas + tf.cast(replica, tf.int64)]))
      grads, metrics = forward_backward(images, targets, weights)
      optimizer.apply(grads, trainable)
      self.ema.update(self.step + 1)
      return metrics

    # An explicit while_loop instead of AutoGraph: converting the step (the model, optimizer and
    # EMA code) costs seconds of CPU at every trace.
    @tf.function(autograph=False)
    def train_chunk(iterator, n):
      def body(i, sums):
        per_replica = strategy.run(replica_step, args=next(iterator))
        with tf.control_dependencies([self.step.assign_add(1)]):
          sums = tuple(s + strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None)
                       for s, k in zip(sums, METRIC_KEYS))
        return i + 1, sums
      sums = tuple(tf.constant(0.0) for _ in METRIC_KEYS)
      _, sums = tf.while_loop(lambda i, sums: i < n, body, (tf.constant(0, n.dtype), sums))
      return dict(zip(METRIC_KEYS, sums))
    return train_chunk

  def weights_by_path(self, which):
    """Returns {path: numpy} of the raw weights, or of the EMA ('ema') where it has one."""
    values = {v.path: np.asarray(v.numpy()) for v in self.model.weights}
    if which == 'ema':
      values.update(self.ema.values_by_path())
    return values


def _step_noise(config, model_config, convention):
  """The train step's batch RandAugment (batch_augment.make_batch_noise) when randaug_on=
  'accelerator' and randaug_layers > 0, else None; 'mask' selection on TPUs (static shapes)."""
  if config.randaug_on != 'accelerator' or not config.randaug_layers:
    return None
  return batch_augment.make_batch_noise(
      config.randaug_layers, config.randaug_magnitude, model_config.resolution, convention,
      small_image=model_config.small_image, flip=config.flip,
      selection='mask' if config.strategy == 'tpu' else 'gather')


def _effective_config(config, data, num_steps, schedule, strategy):
  return {**dataclasses.asdict(config), 'effective': {
      'total_steps': num_steps, 'peak_learning_rate': schedule.base,
      'warmup_steps': schedule.warmup_steps, 'decay_steps': schedule.decay_steps,
      'num_replicas': strategy.num_replicas_in_sync,
      'per_replica_batch': _rows_per_batch(config) // strategy.num_replicas_in_sync,
      'labeled_examples': data.labeled.num_examples,
      'pseudo_examples': data.pseudo.num_examples if data.pseudo else None}}


def _save_final(run, config, model_config, class_names, convention, training_json):
  """Writes config.json and final/{ema,raw}.weights.h5 from a plain (undistributed) float32 copy."""
  model_dir_lib.write_config(config.model_dir, model_dir_lib.ModelDirConfig(
      model=model_config, class_names=class_names, input=convention, training=training_json))
  with _Policy('float32'):
    plain = models.build_from_config(model_config)
  for which in ('ema', 'raw'):
    _copy_by_path(plain, run.weights_by_path(which), f'{which} weights')
    model_dir_lib.save_weights(config.model_dir, plain, which)
  return plain


class _Policy:
  """Context manager setting Keras' global dtype policy and restoring the previous one."""

  def __init__(self, name):
    self.name = name

  def __enter__(self):
    self.previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(self.name)

  def __exit__(self, *exc):
    keras.config.set_dtype_policy(self.previous)


def _evaluate(plain, ema_values, data, config, convention, model_config, predict_fn=None):
  from noisy_student_tf.data import pipeline
  from noisy_student_tf.evaluate import evaluator
  _copy_by_path(plain, ema_values, 'ema weights')
  dataset = pipeline.make_eval_dataset(
      data.evaluation, batch_size=config.eval_batch_size, resolution=model_config.resolution,
      convention=convention, small_image=model_config.small_image, skip_corrupt=config.skip_corrupt,
      max_image_pixels=config.max_image_pixels)
  return evaluator.evaluate_model(plain, dataset, predict_fn, total=data.evaluation.num_examples,
                                  progress=config.progress)


def train(config: TrainConfig) -> dict:
  """Trains the model `config` describes and writes a complete model dir.

  Resumes from the latest checkpoint in MODEL_DIR/ckpt when there is one (same step, same learning
  rate, same EMA); otherwise starts from `init_checkpoint`'s EMA weights or from scratch.  A run
  whose checkpoint is already at the last step only writes the final files.
  Returns {'step', 'loss', 'accuracy', 'learning_rate', 'seconds', 'images_per_second',
  'resumed_from'} plus 'top1', 'top5', 'eval_loss', 'num_eval_examples' when eval_data is set.
  Raises ValueError for bad settings, sources or class counts, before the first step.
  """
  config.validate()
  if config.deterministic:
    # Before any op: makes parallel tf.data maps with random ops deterministic, and kernels too.
    tf.config.experimental.enable_op_determinism()
  # The strategy first: MultiWorkerMirroredStrategy must configure collectives before any TF op.
  strategy = strategy_lib.make_strategy(config.strategy, config.tpu)
  data = _open_sources(config)
  strategy_lib.per_replica_batch(config.batch_size, strategy)
  rows = _rows_per_batch(config)
  if rows % strategy.num_replicas_in_sync:
    raise ValueError(f'a batch of {rows} rows (batch_size {config.batch_size} + pseudo rows) is not '
                     f'divisible by the {strategy.num_replicas_in_sync} replicas')
  num_steps = total_steps(config, data.labeled, data.pseudo)
  schedule = make_schedule(config, data.labeled, num_steps)
  chief = strategy_lib.is_chief(strategy)
  convention = (model_dir_lib.read_config(config.init_checkpoint).input if config.init_checkpoint
                else model_dir_lib.InputConvention())

  with _Policy(config.precision):
    run = _Run(config, data, strategy, num_steps, schedule)
  model_config = run.model_config
  training_json = _effective_config(config, data, num_steps, schedule, strategy)
  if chief:
    os.makedirs(config.model_dir, exist_ok=True)
    model_dir_lib.write_config(config.model_dir, model_dir_lib.ModelDirConfig(
        model=model_config, class_names=data.class_names, input=convention, training=training_json))

  ckpt_dir = os.path.join(config.model_dir, CKPT_DIR)
  if not chief:  # non-chief workers must save too (collectives), into a scratch folder
    ckpt_dir = os.path.join(ckpt_dir, f'.worker-{strategy_lib.worker_index(strategy)}')
  manager = tf.train.CheckpointManager(run.checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints,
                                       step_counter=run.step)
  latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, CKPT_DIR))
  resumed_from = None
  if latest:
    run.checkpoint.restore(latest).assert_existing_objects_matched()
    resumed_from = int(run.step.numpy())
    log.info('resumed from %s at step %d', latest, resumed_from)
  elif config.init_checkpoint:
    init_model, _ = model_dir_lib.load_model(config.init_checkpoint, weights='ema')
    n = _copy_by_path(run.model, {v.path: v.numpy() for v in init_model.weights},
                      f'init_checkpoint {config.init_checkpoint!r}')
    run.ema.reset()
    log.info('initialised %d variables from %s', n, config.init_checkpoint)

  first_step = int(run.step.numpy())
  reporter = callbacks.Reporter(config.model_dir, num_steps, write=chief, mode=config.progress,
                                initial_step=first_step)
  result = {'step': first_step, 'resumed_from': resumed_from}
  start = time.time()
  plain, predict_fn = None, None
  from noisy_student_tf.data import pipeline
  decode_counter = pipeline.DecodeCounter()
  if first_step < num_steps:
    dist_ds = strategy.distribute_datasets_from_function(_train_dataset_fn(
        config, data, convention, model_config.resolution, model_config.small_image, strategy,
        first_step, num_steps=num_steps, decode_counter=decode_counter))
    iterator = iter(dist_ds)
    train_chunk = run.train_chunk_fn(convention)
    step = first_step
    window = {'t': time.time(), 'steps': 0, 'sums': None}
    while step < num_steps:
      boundaries = [num_steps]
      for every in (config.log_every, config.checkpoint_every, config.eval_every):
        if every:
          boundaries.append((step // every + 1) * every)
      n = min(min(boundaries) - step, config.steps_per_execution)
      sums = train_chunk(iterator, tf.constant(n, tf.int32))
      step += n
      sums = {k: float(v.numpy()) for k, v in sums.items()}
      window['steps'] += n
      window['sums'] = sums if window['sums'] is None else {
          k: window['sums'][k] + sums[k] for k in sums}
      if step % config.log_every == 0 or step == num_steps:
        elapsed = time.time() - window['t']
        s, k = window['sums'], window['steps']
        values = {'loss': s['loss'] / k, 'loss_labeled': s['loss_labeled'] / k,
                  'accuracy': s['accuracy'] / max(s['weight_sum'], 1e-12),
                  'weight_decay': s['weight_decay'] / k, 'learning_rate': schedule.value(step),
                  'images_per_second': k * rows / max(elapsed, 1e-9)}
        if config.pseudo:
          values['loss_pseudo'] = values['loss'] - values['loss_labeled']
          if rows - config.batch_size == config.batch_size:  # same weights: parts not separable
            values.pop('loss_labeled'); values.pop('loss_pseudo')
        reporter.scalars('train', step, values)
        result.update(values)
        window = {'t': time.time(), 'steps': 0, 'sums': None}
      if step % config.checkpoint_every == 0 or step == num_steps:
        manager.save(checkpoint_number=step)
      if config.eval_every and step % config.eval_every == 0 and step < num_steps and data.evaluation:
        if plain is None:
          with _Policy('float32'):
            plain = models.build_from_config(model_config)
          from noisy_student_tf.evaluate import evaluator
          predict_fn = evaluator.make_predict_fn(plain)
        ev = _evaluate(plain, run.weights_by_path('ema'), data, config, convention, model_config,
                       predict_fn)
        reporter.scalars('eval', step, {k: ev[k] for k in ('top1', 'top5', 'loss')})
    result['step'] = step
  seconds = time.time() - start
  result['seconds'] = seconds
  # This process' input work: 1/N of the run's rows on each of N workers (one device and
  # skip_corrupt runs also count what tf.data read ahead).
  log.info('worker %d decoded %d training images for %d steps of %d rows',
           strategy_lib.worker_index(strategy), decode_counter.count, result['step'] - first_step,
           rows)
  result['images_per_second'] = (result['step'] - first_step) * rows / max(seconds, 1e-9)

  if chief:
    plain = _save_final(run, config, model_config, data.class_names, convention, training_json)
  if data.evaluation and chief:
    ev = _evaluate(plain, run.weights_by_path('ema'), data, config, convention, model_config)
    reporter.scalars('eval', result['step'], {k: ev[k] for k in ('top1', 'top5', 'loss')})
    result.update(top1=ev['top1'], top5=ev['top5'], eval_loss=ev['loss'],
                  num_eval_examples=ev['num_examples'])
  reporter.close()
  if chief:
    model_dir_lib.atomic_write_text(os.path.join(config.model_dir, RESULT_FILE),
                                    json.dumps(result, indent=2, sort_keys=True))
  else:
    shutil.rmtree(ckpt_dir, ignore_errors=True)
  log.info('training done at step %d in %.1f s', result['step'], seconds)
  return result
