"""The Keras builder: turns an Architecture (see architecture.py) into a keras.Model.

Layer names follow keras.applications (`stem_conv`, `block2a_expand_conv`, `top_conv`, ...), which
keeps checkpoint conversion and debugging readable.  The model takes images already normalised by
the input convention of its model dir (see `noisy_student_tf.data.preprocessing`), NHWC, and returns
float32 logits [N, num_classes] (or pooled features when include_top=False).
"""

import keras

from noisy_student_tf.models import architecture
from noisy_student_tf.models.layers import CONV_INITIALIZER, DENSE_INITIALIZER, DropPath, SqueezeExcite


def _conv_bn_act(x, filters, kernel, stride, config, prefix, conv_suffix, act=True):
  x = keras.layers.Conv2D(filters, kernel, strides=stride, padding='same', use_bias=False,
                          kernel_initializer=CONV_INITIALIZER, name=f'{prefix}_{conv_suffix}')(x)
  bn_name = f'{prefix}_bn' if conv_suffix in ('conv', 'dwconv') else f'{prefix}_{conv_suffix[:-5]}_bn'
  x = keras.layers.BatchNormalization(momentum=config.bn_momentum, epsilon=config.bn_epsilon,
                                      name=bn_name)(x)
  if act:
    x = keras.layers.Activation('swish', name=bn_name[:-2] + 'activation')(x)
  return x


def _mbconv(x, block: architecture.BlockSpec, config):
  prefix = block.name
  inputs = x
  if block.expand_ratio != 1:
    x = _conv_bn_act(x, block.expanded_filters, 1, 1, config, prefix, 'expand_conv')
  x = keras.layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding='same',
                                   use_bias=False, depthwise_initializer=CONV_INITIALIZER,
                                   name=f'{prefix}_dwconv')(x)
  x = keras.layers.BatchNormalization(momentum=config.bn_momentum, epsilon=config.bn_epsilon,
                                      name=f'{prefix}_bn')(x)
  x = keras.layers.Activation('swish', name=f'{prefix}_activation')(x)
  if block.se_filters:
    x = SqueezeExcite(block.se_filters, name=f'{prefix}_se')(x)
  x = _conv_bn_act(x, block.filters_out, 1, 1, config, prefix, 'project_conv', act=False)
  if block.has_skip:
    if block.drop_path_rate > 0:
      x = DropPath(block.drop_path_rate, name=f'{prefix}_drop')(x)
    x = keras.layers.Add(name=f'{prefix}_add')([x, inputs])
  return x


def build_from_config(config: architecture.EfficientNetConfig, input_shape=None) -> keras.Model:
  """Builds the keras.Model for `config`.

  input_shape: (H, W, 3) to fix; default (resolution, resolution, 3).  Pass (None, None, 3) for a
  model that accepts any size (it is fully convolutional up to the global pool).
  Returns a functional keras.Model named after the variant.
  """
  arch = architecture.describe(config)
  if input_shape is None:
    input_shape = (config.resolution, config.resolution, 3)
  inputs = keras.Input(shape=input_shape, name='images')
  x = _conv_bn_act(inputs, arch.stem_filters, 3, 2, config, 'stem', 'conv')
  for block in arch.blocks:
    x = _mbconv(x, block, config)
  x = _conv_bn_act(x, arch.head_filters, 1, 1, config, 'top', 'conv')
  x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
  if config.include_top:
    if config.dropout > 0:
      x = keras.layers.Dropout(config.dropout, name='top_dropout')(x)
    # float32 logits under mixed precision: the softmax/CE that follows needs the range.
    x = keras.layers.Dense(config.num_classes, kernel_initializer=DENSE_INITIALIZER,
                           dtype='float32', name='logits')(x)
  return keras.Model(inputs, x, name=config.name.replace('-', '_'))


def build_model(name='efficientnet-b0', num_classes=1000, **overrides) -> keras.Model:
  """Builds a named EfficientNet ('efficientnet-b0' ... 'efficientnet-b7', 'efficientnet-l2',
  'efficientnet-l2-475', or short 'b0').

  overrides: width, depth, resolution, dropout, drop_path_rate, include_top, small_image, phi,
    alpha, beta, gamma, bn_momentum, bn_epsilon (see architecture.make_config), and input_shape.
  Returns an uncompiled keras.Model whose output is float32 logits [N, num_classes].
  Raises ValueError naming the bad value for unknown names or out-of-range overrides.
  """
  input_shape = overrides.pop('input_shape', None)
  config = architecture.make_config(name, num_classes, **overrides)
  return build_from_config(config, input_shape)
