"""The student's input noise: RandAugment(N, M) on the official Noisy Student scale, built from
keras-cv layers.

keras-cv's own `RandAugment` caps its magnitude at 1.0 (official level 10; the paper's M=27 for
L2 raises ValueError), samples magnitudes from a normal distribution and lacks Rotate, Posterize,
Sharpness, Invert, Cutout and SolarizeAdd.  So the official policy is assembled here from keras-cv
layers in a `keras_cv.layers.RandomAugmentationPipeline` (N layers per image, each picking one of
the 16 ops uniformly and always applying it, as the official code does: its `prob` is unused).
Every op gets its argument from the level M exactly as google-research/noisystudent's
randaugment.py computes it (levels run 0-10 and extrapolate linearly above 10), with a fixed
magnitude and a random sign where the official op negates:

  op            official argument at level M (f = M / 10)    keras-cv layer (at M = 27)
  AutoContrast  -                                            AutoContrast
  Equalize      -                                            Equalization
  Invert        -                                            Solarization(threshold 0)
  Rotate        +-30 f degrees                               RandomRotation, fixed +-angle (+-81 deg)
  Posterize     int(4 f) bits, clamped to 1..8 (8 = no-op)   Posterization (bits 8: identity)
  Solarize      threshold int(256 f) (>= 256: no-op)         Solarization(threshold) (identity)
  SolarizeAdd   +int(110 f) to pixels < 128                  SolarizeAdd (keras-cv base layer)
  Color         blend factor c = 1.8 f + 0.1                 RandomColorDegeneration(1 - c) (c 4.96)
  Contrast      c                                            RandomContrast, factor fixed to c
  Brightness    c (multiply)                                 MultiplyBrightness (keras-cv base layer)
  Sharpness     c                                            RandomSharpness(1 - c)
  ShearX/Y      +-0.3 f                                      RandomShear (+-0.81)
  TranslateX/Y  +-f * translate_const pixels                 RandomTranslation, fixed +-fraction
  Cutout        square of side 2 int(f * cutout_const)       RandomCutout, fixed size
translate_const = 100 and cutout_const = 40 pixels for ImageNet-size images (so at M=27 a shift of
270 px and a 216 px square: the official code does not scale them with the resolution); for
small-image models (32 px) both are R // 8, and, as in the official CIFAR/SVHN recipe, a Cutout of
side R / 2 follows RandAugment on every image.  Empty pixels are filled with gray 128; geometric
ops use nearest-neighbour sampling, as the official code does.

Known differences from the official ops: keras-cv's Contrast blends towards each channel's mean
(PIL's intent; the official TF op blends towards pixel-count / 256, a known bug there); blends are
computed in float and clipped rather than truncated to uint8 after every op.
"""

import math

import keras_cv
import tensorflow as tf
from keras_cv import core
from keras_cv.layers import BaseImageAugmentationLayer

MAX_LEVEL = 10.0
FILL = 128.0
IMAGENET_TRANSLATE_CONST = 100
IMAGENET_CUTOUT_CONST = 40
OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
            'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
            'SolarizeAdd', 'Cutout')
_RANGE = (0, 255)


def _const(value):
  """A keras-cv factor that always returns `value` (factor samplers bypass the layers' [0, 1]
  range checks, which is how levels above 10 are expressed)."""
  return core.ConstantFactorSampler(float(value))


def _random_sign(generator, batch_size, shape_tail=()):
  u = generator.uniform(shape=[batch_size, *shape_tail], minval=0.0, maxval=1.0)
  return tf.where(u < 0.5, -1.0, 1.0)


class SignedRotation(keras_cv.layers.RandomRotation):
  """RandomRotation by exactly +-`degrees` (random sign) instead of a uniform angle."""

  def __init__(self, degrees, **kwargs):
    super().__init__(factor=0.0, fill_mode='constant', fill_value=FILL,
                     interpolation='nearest', **kwargs)
    self.degrees = float(degrees)

  def get_random_transformation_batch(self, batch_size, **kwargs):
    angle = self.degrees * math.pi / 180.0
    return {'angles': angle * _random_sign(self._random_generator, batch_size)}


class SignedTranslation(keras_cv.layers.RandomTranslation):
  """RandomTranslation by exactly +-`pixels` along one axis (random sign)."""

  def __init__(self, pixels, axis, resolution, **kwargs):
    super().__init__(height_factor=0.0, width_factor=0.0, fill_mode='constant',
                     fill_value=FILL, interpolation='nearest', **kwargs)
    self.fraction = float(pixels) / float(resolution)
    self.axis = axis

  def get_random_transformation_batch(self, batch_size, **kwargs):
    shift = self.fraction * _random_sign(self._random_generator, batch_size, (1,))
    zero = tf.zeros([batch_size, 1])
    if self.axis == 'x':
      return {'height_translations': zero, 'width_translations': shift}
    return {'height_translations': shift, 'width_translations': zero}


class MultiplyBrightness(BaseImageAugmentationLayer):
  """Official Brightness: blend with a black image, i.e. pixels * factor, clipped to [0, 255].
  (keras-cv's RandomBrightness adds a delta instead.)"""

  def __init__(self, factor, **kwargs):
    super().__init__(**kwargs)
    self.factor = float(factor)

  def augment_image(self, image, transformation=None, **kwargs):
    return tf.clip_by_value(image * self.factor, 0.0, 255.0)


class SolarizeAdd(BaseImageAugmentationLayer):
  """Official SolarizeAdd: adds `addition` to pixels below `threshold` only, clipped.
  (keras-cv's Solarization adds to every pixel, then inverts above its threshold.)"""

  def __init__(self, addition, threshold=128.0, **kwargs):
    super().__init__(**kwargs)
    self.addition = float(addition)
    self.threshold = float(threshold)

  def augment_image(self, image, transformation=None, **kwargs):
    added = tf.clip_by_value(image + self.addition, 0.0, 255.0)
    return tf.where(image < self.threshold, added, image)


def op_arguments(magnitude, translate_const=IMAGENET_TRANSLATE_CONST,
                 cutout_const=IMAGENET_CUTOUT_CONST):
  """The official argument of every op at level `magnitude` (a dict op name -> number), before
  clamping to what the op can express."""
  f = float(magnitude) / MAX_LEVEL
  enhance = 1.8 * f + 0.1
  return {
      'Rotate': 30.0 * f, 'Posterize': int(4 * f), 'Solarize': int(256 * f),
      'SolarizeAdd': int(110 * f), 'Color': enhance, 'Contrast': enhance,
      'Brightness': enhance, 'Sharpness': enhance, 'ShearX': 0.3 * f, 'ShearY': 0.3 * f,
      'TranslateX': f * translate_const, 'TranslateY': f * translate_const,
      'Cutout': int(f * cutout_const),
  }


def build_ops(magnitude, resolution, translate_const=IMAGENET_TRANSLATE_CONST,
              cutout_const=IMAGENET_CUTOUT_CONST, seed=None):
  """The 16 official RandAugment ops at level `magnitude` as keras-cv layers (images 0-255).

  Returns a dict op name -> keras layer, in OP_NAMES order.
  """
  a = op_arguments(magnitude, translate_const, cutout_const)
  contrast = keras_cv.layers.RandomContrast(value_range=_RANGE, factor=0.5, seed=seed)
  contrast.factor = _const(a['Contrast'])  # above keras-cv's [0, 2] constructor check
  cutout_side = min(1.0, 2 * a['Cutout'] / resolution)
  ops = {
      'AutoContrast': keras_cv.layers.AutoContrast(value_range=_RANGE),
      'Equalize': keras_cv.layers.Equalization(value_range=_RANGE),
      'Invert': keras_cv.layers.Solarization(value_range=_RANGE, threshold_factor=_const(0)),
      'Rotate': SignedRotation(a['Rotate'], seed=seed),
      'Posterize': keras_cv.layers.Posterization(value_range=_RANGE,
                                                 bits=min(8, max(1, a['Posterize']))),
      'Solarize': keras_cv.layers.Solarization(value_range=_RANGE,
                                               threshold_factor=_const(min(256, a['Solarize']))),
      'Color': keras_cv.layers.RandomColorDegeneration(factor=_const(1.0 - a['Color'])),
      'Contrast': contrast,
      'Brightness': MultiplyBrightness(a['Brightness']),
      'Sharpness': keras_cv.layers.RandomSharpness(factor=_const(1.0 - a['Sharpness']),
                                                   value_range=_RANGE, seed=seed),
      'ShearX': keras_cv.layers.RandomShear(x_factor=_const(a['ShearX']), fill_mode='constant',
                                            fill_value=FILL, interpolation='nearest', seed=seed),
      'ShearY': keras_cv.layers.RandomShear(y_factor=_const(a['ShearY']), fill_mode='constant',
                                            fill_value=FILL, interpolation='nearest', seed=seed),
      'TranslateX': SignedTranslation(a['TranslateX'], 'x', resolution, seed=seed),
      'TranslateY': SignedTranslation(a['TranslateY'], 'y', resolution, seed=seed),
      'SolarizeAdd': SolarizeAdd(a['SolarizeAdd']),
      'Cutout': keras_cv.layers.RandomCutout(height_factor=_const(cutout_side),
                                             width_factor=_const(cutout_side),
                                             fill_mode='constant', fill_value=FILL, seed=seed),
  }
  return {name: ops[name] for name in OP_NAMES}


def make_randaugment(num_layers, magnitude, resolution, small_image=False, seed=None):
  """The student's noise as a callable uint8 [R, R, 3] -> uint8 [R, R, 3] (None when
  num_layers == 0).

  num_layers: N ops per image; magnitude: M on the official scale (0-10, extrapolated above 10:
  the paper uses N=2, M=27 for L2).  small_image: the official 32 px recipe (translate and cutout
  constants R // 8, and an extra Cutout of side R / 2 after RandAugment).
  Raises ValueError on a negative N or M.
  """
  num_layers = int(num_layers or 0)
  if num_layers < 0:
    raise ValueError(f'randaug_layers must be >= 0, got {num_layers}')
  if magnitude is None or float(magnitude) < 0:
    raise ValueError(f'randaug_magnitude must be >= 0, got {magnitude!r}')
  if num_layers == 0:
    return None
  resolution = int(resolution)
  if small_image:
    consts = dict(translate_const=resolution // 8, cutout_const=resolution // 8)
  else:
    consts = {}
  ops = build_ops(magnitude, resolution, seed=seed, **consts)
  pipeline = keras_cv.layers.RandomAugmentationPipeline(
      layers=list(ops.values()), augmentations_per_image=num_layers, rate=1.0, seed=seed)
  final_cutout = None
  if small_image:
    final_cutout = keras_cv.layers.RandomCutout(height_factor=_const(0.5), width_factor=_const(0.5),
                                                fill_mode='constant', fill_value=FILL, seed=seed)

  def augment(image):
    x = tf.cast(image, tf.float32)
    x = pipeline(x)
    if final_cutout is not None:
      x = final_cutout(x)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return tf.ensure_shape(tf.cast(x, tf.uint8), image.shape)

  augment.pipeline = pipeline
  augment.ops = ops
  return augment
