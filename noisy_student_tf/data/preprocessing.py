"""Decoding, cropping and normalisation: pure TensorFlow ops, usable in tf.data and SavedModels.

THE INPUT RANGE CONVENTION (stated here once): images travel as RGB uint8 (0-255) through
decoding, cropping and augmentation; the last step, `normalize`, turns them into float32
(x - mean) / std per channel, with mean/std on the 0-255 scale from the model dir's
`InputConvention` (ImageNet mean/std by default, as the official checkpoints expect).  Models
take exactly that.

Evaluation / labeling: center crop of side min(h, w) * R / (R + crop_padding), resized to R x R
(the EfficientNet padding ratio).  Training: Inception-style random-resized crop (area 8-100%,
aspect 3/4-4/3) resized to R x R, then a random horizontal flip.  Small-image mode (32 px
CIFAR / SVHN models): no crop for evaluation (images resized to R x R when not already that size);
for training, reflect-pad 4, random R x R crop, random flip.  Grayscale and RGBA inputs become
RGB; any input size works.  Resizing results are clipped to [0, 255] before the uint8 cast
(bicubic overshoots, and augmentation ops index histograms by pixel value).
"""

import tensorflow as tf

SMALL_IMAGE_PAD = 4


def decode(encoded):
  """Decodes JPEG/PNG/GIF/BMP/WebP bytes to uint8 [H, W, 3] (grayscale and RGBA become RGB)."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _resize(image, size, convention):
  """Resizes uint8/float [H, W, 3] to [size, size, 3] uint8, clipped to the valid range."""
  image = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                          method=convention.resize_method, antialias=False)
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def normalize(image_0_255, convention):
  """Takes RGB pixels on the 0-255 scale (any dtype, [..., 3]); returns float32
  (x - mean) / std with the convention's per-channel mean and std."""
  x = tf.cast(image_0_255, tf.float32)
  mean = tf.constant(convention.mean, tf.float32)
  std = tf.constant(convention.std, tf.float32)
  return (x - mean) / std


def center_crop(image, resolution, convention, small_image=False):
  """The evaluation crop of a decoded uint8 [H, W, 3] image; returns uint8 [R, R, 3].

  Crops the central square of side min(h, w) * R / (R + crop_padding) and resizes it to R x R.
  small_image: no crop, the whole image resized to R x R (a no-op for R x R inputs).
  """
  resolution = int(resolution)
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  if small_image:
    same = tf.logical_and(tf.equal(h, resolution), tf.equal(w, resolution))
    out = tf.cond(same, lambda: tf.identity(image), lambda: _resize(image, resolution, convention))
    out.set_shape([resolution, resolution, 3])
    return out
  ratio = resolution / (resolution + convention.crop_padding)
  side = tf.maximum(1, tf.cast(ratio * tf.cast(tf.minimum(h, w), tf.float32), tf.int32))
  top = (h - side + 1) // 2
  left = (w - side + 1) // 2
  crop = tf.image.crop_to_bounding_box(image, top, left, side, side)
  out = _resize(crop, resolution, convention)
  out.set_shape([resolution, resolution, 3])
  return out


def eval_crop(encoded, resolution, convention, small_image=False):
  """Decodes `encoded` and center-crops it: uint8 [R, R, 3] (before normalisation)."""
  return center_crop(decode(encoded), resolution, convention, small_image)


def eval_preprocess(encoded, resolution, convention, small_image=False):
  """Encoded image bytes -> normalised float32 [R, R, 3] for evaluation and labeling.

  Deterministic, no augmentation; pure TF ops (usable inside a SavedModel signature).
  """
  return normalize(eval_crop(encoded, resolution, convention, small_image), convention)


def random_resized_crop(image, resolution, convention, seed=None):
  """Inception-style random crop (area 8-100%, aspect 3/4-4/3, 10 attempts, falling back to the
  center crop) of a uint8 [H, W, 3] image, resized to uint8 [R, R, 3]."""
  shape = tf.shape(image)
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      min_object_covered=0.1, aspect_ratio_range=(3. / 4., 4. / 3.), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True, seed=seed)
  # sample_distorted_bounding_box returns the whole image when every attempt failed.
  failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
  out = tf.cond(failed,
                lambda: center_crop(image, resolution, convention),
                lambda: _resize(tf.slice(image, begin, size), resolution, convention))
  out.set_shape([resolution, resolution, 3])
  return out


def small_image_crop(image, resolution, convention):
  """Resizes to R x R when needed, reflect-pads 4 pixels and takes a random R x R crop."""
  image = center_crop(image, resolution, convention, small_image=True)
  p = SMALL_IMAGE_PAD
  padded = tf.pad(image, [[p, p], [p, p], [0, 0]], mode='REFLECT')
  return tf.image.random_crop(padded, [resolution, resolution, 3])


def train_crop(image, resolution, convention, small_image=False, flip=True, augment=None):
  """Training geometry and noise of a decoded uint8 [H, W, 3] image; returns uint8 [R, R, 3].

  Order as in the official code: large images: random-resized crop, flip, `augment`; small images:
  `augment` on the R x R image, then reflect-pad-crop and flip.  augment: optional callable
  uint8 [R, R, 3] -> uint8 [R, R, 3] (the student's RandAugment, see augment.py).
  """
  resolution = int(resolution)
  if small_image:
    image = center_crop(image, resolution, convention, small_image=True)
    if augment is not None:
      image = augment(image)
    image = small_image_crop(image, resolution, convention)
  else:
    image = random_resized_crop(image, resolution, convention)
  if flip:
    image = tf.image.random_flip_left_right(image)
  if augment is not None and not small_image:
    image = augment(image)
  image = tf.ensure_shape(image, [resolution, resolution, 3])
  return image


def train_preprocess(encoded, resolution, convention, small_image=False, flip=True, augment=None):
  """Encoded image bytes -> normalised float32 [R, R, 3] with random crop, flip and `augment`.

  Not deterministic (that is the point).  See `train_crop` for the order of operations.
  """
  image = train_crop(decode(encoded), resolution, convention, small_image, flip, augment)
  return normalize(image, convention)
