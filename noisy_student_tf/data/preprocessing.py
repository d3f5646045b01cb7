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

THE PIXEL LIMIT: images as the web has them include a few huge ones (a 20,000 x 20,000 JPEG is a
few MB on disk and 1.2 GB decoded).  Every decode path first reads height x width from the file
header (`image_pixels`: JPEG via tf.image.extract_jpeg_shape, PNG IHDR, GIF logical screen, BMP,
WebP; nothing is decoded) and refuses images over `max_image_pixels` (default
DEFAULT_MAX_IMAGE_PIXELS = 64 megapixels; 0 or None: no limit) before tf.io.decode_image runs:
`decode` raises InvalidArgumentError, the tf.data pipelines skip-and-count or stop naming the
image (data/pipeline.py), the serving signature answers InvalidArgument (export/signatures.py).
"""

import tensorflow as tf

SMALL_IMAGE_PAD = 4
# InputConvention.resize_method of converted official checkpoints: TF1 resize_bicubic.
TF1_BICUBIC = 'bicubic_tf1'
# Images with more pixels (height x width, from the header) are refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_HEADER_BYTES = 32
_MAX_SIDE = 2 ** 31 - 1  # keeps height * width inside int64 whatever a header claims


def _starts_with(b, offset, signature):
  """True when bytes b[offset:offset + len(signature)] (int64 [_HEADER_BYTES]) equal signature."""
  want = tf.constant(list(signature), tf.int64)
  return tf.reduce_all(tf.equal(b[offset:offset + len(signature)], want))


def _uint(b, offset, size, big_endian=False):
  """The unsigned integer of `size` header bytes at `offset` (int64)."""
  order = range(size - 1, -1, -1) if big_endian else range(size)
  return tf.add_n([b[offset + i] * (256 ** k) for k, i in enumerate(order)])


def _header_pixels(b):
  """height * width of a PNG / GIF / BMP / WebP from its first _HEADER_BYTES bytes; -1 for any
  other format.  Pure arithmetic on the bytes: never raises."""
  def int32(offset):  # BMP sizes are signed (a negative height means top-down rows)
    u = _uint(b, offset, 4)
    return tf.abs(tf.where(u >= 2 ** 31, u - 2 ** 32, u))
  bmp_core = tf.equal(_uint(b, 14, 4), 12)  # BITMAPCOREHEADER: 16-bit sizes
  vp8l = _uint(b, 21, 4)
  formats = [  # (is this format, width, height)
      (_starts_with(b, 0, b'\x89PNG\r\n\x1a\n'), _uint(b, 16, 4, True), _uint(b, 20, 4, True)),
      (_starts_with(b, 0, b'GIF'), _uint(b, 6, 2), _uint(b, 8, 2)),
      (_starts_with(b, 0, b'BM'), tf.where(bmp_core, _uint(b, 18, 2), int32(18)),
       tf.where(bmp_core, _uint(b, 20, 2), int32(22))),
  ]
  webp = tf.logical_and(_starts_with(b, 0, b'RIFF'), _starts_with(b, 8, b'WEBP'))
  formats += [
      (tf.logical_and(webp, _starts_with(b, 12, b'VP8 ')),  # lossy: 14-bit sizes in the frame
       _uint(b, 26, 2) % 16384, _uint(b, 28, 2) % 16384),
      (tf.logical_and(webp, _starts_with(b, 12, b'VP8L')),  # lossless: 14-bit sizes - 1
       vp8l % 16384 + 1, (vp8l // 16384) % 16384 + 1),
      (tf.logical_and(webp, _starts_with(b, 12, b'VP8X')),  # extended: 24-bit canvas sizes - 1
       _uint(b, 24, 3) + 1, _uint(b, 27, 3) + 1),
  ]
  pixels = tf.constant(-1, tf.int64)
  for is_format, width, height in reversed(formats):
    area = tf.minimum(width, _MAX_SIDE) * tf.minimum(height, _MAX_SIDE)
    pixels = tf.where(is_format, area, pixels)
  return pixels


def image_pixels(encoded):
  """height * width (int64 scalar) of the encoded image `encoded` (a string scalar), read from its
  header without decoding it: JPEG (tf.image.extract_jpeg_shape), PNG, GIF (logical screen),
  BMP, WebP.  -1 for anything else (an unknown format, an empty or too short string): 'unknown,
  let the decoder decide'.  Graph-safe (tf.data, tf.function, SavedModels); raises only for a
  JPEG whose header libjpeg cannot parse, as decoding it would.
  """
  encoded = tf.convert_to_tensor(encoded, tf.string)
  b = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 0, _HEADER_BYTES), tf.uint8,
                               fixed_length=_HEADER_BYTES), tf.int64)
  # The signature tf.io.decode_image recognises JPEG by.
  is_jpeg = _starts_with(b, 0, b'\xff\xd8\xff')
  return tf.cond(
      is_jpeg,
      lambda: tf.reduce_prod(tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2]),
      lambda: _header_pixels(b))


def pixel_limit_message(max_image_pixels):
  """The words after the pixel count in every 'image too large' error."""
  return (f'pixels (height x width from its header), over the limit max_image_pixels='
          f'{int(max_image_pixels)} (--max_image_pixels; 0: no limit)')


def check_image_pixels(encoded, max_image_pixels, pixels=None):
  """An assertion (InvalidArgumentError when it fails) that `encoded` has at most
  `max_image_pixels` pixels by its header; None when there is no limit (0 or None).  Make the
  decode depend on it (tf.control_dependencies) so that nothing large is allocated first."""
  if not max_image_pixels:
    return None
  if pixels is None:
    pixels = image_pixels(encoded)
  return tf.debugging.Assert(
      pixels <= int(max_image_pixels),
      ['image too large: it has', pixels, pixel_limit_message(max_image_pixels)],
      name='check_image_pixels')


def decode(encoded, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Decodes JPEG/PNG/GIF/BMP/WebP bytes to uint8 [H, W, 3] (grayscale and RGBA become RGB).

  Images over `max_image_pixels` (by their header; 0 or None: no limit) raise InvalidArgumentError
  before anything is decoded.
  """
  check = check_image_pixels(encoded, max_image_pixels)
  if check is not None:
    with tf.control_dependencies([check]):
      encoded = tf.identity(encoded)
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize_float(image, size, convention):
  """Resizes uint8/float [H, W, 3] to float32 [size, size, 3] with the convention's method, not
  clipped or rounded.

  resize_method 'bicubic_tf1' is TF1's `tf.image.resize_bicubic` (align_corners=False, no
  half-pixel centres, the Keys kernel with a = -0.75), which the official EfficientNet / Noisy
  Student preprocessing calls and so what converted official checkpoints were trained and
  evaluated with; any other name is a `tf.image.resize` method (TF2: half-pixel centres; its
  'bicubic' has a = -0.5).
  """
  image = tf.cast(image, tf.float32)
  if convention.resize_method == TF1_BICUBIC:
    return tf.raw_ops.ResizeBicubic(images=image[tf.newaxis], size=[size, size],
                                    align_corners=False, half_pixel_centers=False)[0]
  return tf.image.resize(image, [size, size], method=convention.resize_method, antialias=False)


def _resize(image, size, convention):
  """Resizes uint8/float [H, W, 3] to [size, size, 3] uint8, clipped to the valid range."""
  image = resize_float(image, size, convention)
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


def eval_crop(encoded, resolution, convention, small_image=False,
              max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Decodes `encoded` and center-crops it: uint8 [R, R, 3] (before normalisation)."""
  return center_crop(decode(encoded, max_image_pixels), resolution, convention, small_image)


def eval_preprocess(encoded, resolution, convention, small_image=False,
                    max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Encoded image bytes -> normalised float32 [R, R, 3] for evaluation and labeling.

  Deterministic, no augmentation; pure TF ops (usable inside a SavedModel signature).
  """
  return normalize(eval_crop(encoded, resolution, convention, small_image, max_image_pixels),
                   convention)


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


def train_preprocess(encoded, resolution, convention, small_image=False, flip=True, augment=None,
                     max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Encoded image bytes -> normalised float32 [R, R, 3] with random crop, flip and `augment`.

  Not deterministic (that is the point).  See `train_crop` for the order of operations.
  """
  image = train_crop(decode(encoded, max_image_pixels), resolution, convention, small_image, flip,
                     augment)
  return normalize(image, convention)
