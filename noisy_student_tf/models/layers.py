"""Keras 3 layers the EfficientNet builder needs beyond the stock ones (backend independent)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package='noisy_student_tf')
class DropPath(keras.layers.Layer):
  """Stochastic depth on a residual branch: in training, zeroes the whole branch of an example
  with probability `rate` and scales survivors by 1/(1-rate); identity at inference.

  Takes a tensor [N, ...] (the residual branch, before the skip is added) and returns the same shape.
  """

  def __init__(self, rate, seed=None, **kwargs):
    super().__init__(**kwargs)
    if not 0 <= rate < 1:
      raise ValueError(f'DropPath rate must be in [0, 1), got {rate!r}')
    self.rate = float(rate)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs, training=None):
    if not training or self.rate == 0:
      return inputs
    keep = 1.0 - self.rate
    shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    # Drawn in float32 whatever the compute dtype: bfloat16 noise has steps of 1/128, which biases
    # both the drop rate and the survivors' scale.
    noise = keras.random.uniform(shape, dtype='float32', seed=self.seed_generator)
    scale = ops.where(noise < keep, 1.0 / keep, 0.0)
    return inputs * ops.cast(scale, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate, 'seed': self.seed}


@keras.saving.register_keras_serializable(package='noisy_student_tf')
class SqueezeExcite(keras.layers.Layer):
  """Squeeze-and-excitation: global average pool, 1x1 reduce (bias) + swish, 1x1 expand (bias) +
  sigmoid, multiplied back onto the input.

  Takes [N, H, W, C] and returns the same shape.  The two 1x1 convolutions on a 1x1 map are dense
  layers; they are kept as sublayers named `reduce` and `expand` with conv-shaped kernels
  [1, 1, in, out] so that weights convert one to one from the official checkpoints.
  """

  def __init__(self, se_filters, **kwargs):
    super().__init__(**kwargs)
    self.se_filters = int(se_filters)

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self.reduce = keras.layers.Conv2D(self.se_filters, 1, use_bias=True, name='reduce',
                                      kernel_initializer=CONV_INITIALIZER, dtype=self.dtype_policy)
    self.expand = keras.layers.Conv2D(channels, 1, use_bias=True, name='expand',
                                      kernel_initializer=CONV_INITIALIZER, dtype=self.dtype_policy)
    self.reduce.build((None, 1, 1, channels))
    self.expand.build((None, 1, 1, self.se_filters))

  def call(self, inputs):
    squeezed = ops.mean(inputs, axis=(1, 2), keepdims=True)
    gate = ops.sigmoid(self.expand(ops.silu(self.reduce(squeezed))))
    return inputs * gate

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'se_filters': self.se_filters}


# The official initialisers: conv kernels N(0, sqrt(2/fan_out)), dense U(+-1/sqrt(out)).
# As configs, not instances: Keras builds a fresh initializer (a fresh seed, drawn from the seeded
# Python RNG) per layer; one shared unseeded instance gives every same-shaped kernel the same values.
CONV_INITIALIZER = {'class_name': 'VarianceScaling',
                    'config': {'scale': 2.0, 'mode': 'fan_out', 'distribution': 'truncated_normal'}}
DENSE_INITIALIZER = {'class_name': 'VarianceScaling',
                     'config': {'scale': 1.0 / 3.0, 'mode': 'fan_out', 'distribution': 'uniform'}}
