"""Optimisation pieces of the training loop: the learning-rate schedule, the optimizer, weight decay
on kernels, and the exponential moving average (EMA) of the weights.

All of them are functions of the trainer's own step counter, so a run resumed from a checkpoint is at
exactly the same learning rate and EMA decay as an uninterrupted one.
"""

import dataclasses
import math

import keras
import tensorflow as tf

SCHEDULES = ('exponential', 'cosine', 'constant')
OPTIMIZERS = ('rmsprop', 'momentum', 'adam')


@dataclasses.dataclass(frozen=True)
class LearningRate:
  """The learning rate as a function of the step.

  base: the peak rate (already scaled by batch / 256).  warmup_steps: linear ramp from 0.
  kind: 'exponential' (base * decay_factor ** floor(step / decay_steps), staircase, the paper's
  0.97 every 2.4 epochs), 'cosine' (half cosine from base to 0 at total_steps) or 'constant'.
  As in the official code, warmup replaces the decayed rate for step < warmup_steps; it does not
  shift the decay.
  """
  base: float
  total_steps: int
  warmup_steps: int = 0
  kind: str = 'exponential'
  decay_steps: float = 1.0
  decay_factor: float = 0.97

  def __post_init__(self):
    if self.kind not in SCHEDULES:
      raise ValueError(f'lr schedule must be one of {SCHEDULES}, got {self.kind!r}')
    if not self.base > 0:
      raise ValueError(f'learning rate must be > 0, got {self.base!r}')
    if self.kind == 'exponential' and not self.decay_steps > 0:
      raise ValueError(f'lr decay interval must be > 0 steps, got {self.decay_steps!r}')

  def __call__(self, step):
    """Returns the rate at `step` (a scalar tensor or number) as a float32 tensor."""
    step = tf.cast(step, tf.float32)
    base = tf.constant(self.base, tf.float32)
    if self.kind == 'exponential':
      lr = base * tf.pow(tf.constant(self.decay_factor, tf.float32),
                         tf.floor(step / float(self.decay_steps)))
    elif self.kind == 'cosine':
      frac = tf.minimum(step / float(max(1, self.total_steps)), 1.0)
      lr = 0.5 * base * (1.0 + tf.cos(math.pi * frac))
    else:
      lr = base
    if self.warmup_steps > 0:
      lr = tf.where(step < float(self.warmup_steps), base * step / float(self.warmup_steps), lr)
    return lr

  def value(self, step):
    """Returns the rate at an integer step as a Python float."""
    return float(self(step).numpy())


def make_optimizer(name, learning_rate, *, rho=0.9, momentum=0.9, epsilon=1e-3,
                   precision='float32'):
  """Builds the Keras optimizer.

  name: 'rmsprop' (the paper's: decay rho 0.9, momentum 0.9, epsilon 1e-3 inside the square root),
  'momentum' (SGD with Nesterov momentum) or 'adam'.  learning_rate: a float or a no-argument
  callable (the trainer passes `lambda: schedule(step)`).  precision 'mixed_float16' wraps it in
  a LossScaleOptimizer.  Returns a keras.optimizers.Optimizer.

  Note: Keras RMSprop starts its squared-gradient average at zeros, TF1's at ones; with warmup the
  difference does not matter (see references/checkpoints.md, 4.4).
  """
  if name == 'rmsprop':
    opt = keras.optimizers.RMSprop(learning_rate=learning_rate, rho=rho, momentum=momentum,
                                   epsilon=epsilon)
  elif name == 'momentum':
    opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=True)
  elif name == 'adam':
    opt = keras.optimizers.Adam(learning_rate=learning_rate, epsilon=epsilon)
  else:
    raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {name!r}')
  if precision == 'mixed_float16':
    opt = keras.optimizers.LossScaleOptimizer(opt)
  return opt


def is_kernel(variable):
  """True for convolution, depthwise and dense kernels: the variables weight decay applies to
  (not biases, not batch-norm scales and offsets)."""
  leaf = variable.path.rsplit('/', 1)[-1]
  return leaf in ('kernel', 'depthwise_kernel')


def weight_decay_loss(variables, weight_decay):
  """Returns weight_decay * sum(||w||^2) / 2 over the kernels in `variables` (the official
  `1e-5 * sum(tf.nn.l2_loss(w))`), as a float32 scalar tensor."""
  kernels = [v for v in variables if is_kernel(v)]
  if not kernels or not weight_decay:
    return tf.constant(0.0)
  return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])


def averaged_variables(model):
  """The variables the EMA tracks, as the official code: every trainable variable plus the
  batch-norm moving means and variances.  Returns a list of keras Variables."""
  extra = [v for v in model.non_trainable_variables
           if v.path.rsplit('/', 1)[-1] in ('moving_mean', 'moving_variance')]
  return list(model.trainable_variables) + extra


class WeightAverage(tf.Module):
  """Exponential moving average of a list of variables, one shadow variable per variable.

  The decay at step t is min(decay, (1 + t) / (10 + t)), TF's `num_updates` rule, so the average
  follows the weights closely early on.  Create it inside the strategy scope; `update` runs inside
  the replica function (each replica averages its own copy; the weights agree across replicas after
  the all-reduce, the first replica's batch-norm statistics are the ones saved).
  """

  def __init__(self, variables, decay):
    super().__init__(name='ema')
    if not 0 <= decay < 1:
      raise ValueError(f'ema_decay must be in [0, 1), got {decay!r}')
    self.decay = float(decay)
    self._tracked = list(variables)
    self.shadows = [
        tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f'ema_{i}',
                    aggregation=tf.VariableAggregation.NONE)
        for i, v in enumerate(self._tracked)]

  def update(self, step):
    """Moves every shadow towards its variable; `step` is the number of updates done so far."""
    step = tf.cast(step, tf.float32)
    decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
    for shadow, var in zip(self.shadows, self._tracked):
      shadow.assign_sub((1.0 - decay) * (shadow - tf.cast(tf.convert_to_tensor(var), shadow.dtype)))

  def reset(self):
    """Sets every shadow to its variable's current value (after loading initial weights)."""
    for shadow, var in zip(self.shadows, self._tracked):
      shadow.assign(tf.convert_to_tensor(var))

  def values_by_path(self):
    """Returns {variable path: numpy value of its average}."""
    return {var.path: shadow.numpy() for shadow, var in zip(self.shadows, self._tracked)}
