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

import numpy as np
import tensorflow as tf

SMALL_IMAGE_PAD = 4
# InputConvention.resize_method of converted official checkpoints: TF1 resize_bicubic.
TF1_BICUBIC = 'bicubic_tf1'
# Images with more pixels (height x width, from the header) are refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_HEADER_BYTES = 32
_MAX_SIDE = 2 ** 31 - 1  # keeps height * width inside int64 whatever a header claims


# The header formats: (signature parts (offset, bytes), width field, height field), the first
# matching row wins.  A field: (offset, size, big-endian, signed, divisor, modulus, plus); its
# value is ((unsigned int at offset) // divisor) % modulus + plus (abs of the int32 if signed).
_ANY = 2 ** 40  # a modulus that changes nothing
_WEBP = ((0, b'RIFF'), (8, b'WEBP'))
_HEADER_FORMATS = (
    (((0, b'\x89PNG\r\n\x1a\n'),), (16, 4, True, False, 1, _ANY, 0),
     (20, 4, True, False, 1, _ANY, 0)),
    (((0, b'GIF'),), (6, 2, False, False, 1, _ANY, 0), (8, 2, False, False, 1, _ANY, 0)),
    # BITMAPCOREHEADER (header size 12): 16-bit sizes; other BMP headers: signed 32-bit ones
    # (a negative height means top-down rows).
    (((0, b'BM'), (14, b'\x0c\0\0\0')), (18, 2, False, False, 1, _ANY, 0),
     (20, 2, False, False, 1, _ANY, 0)),
    (((0, b'BM'),), (18, 4, False, True, 1, _ANY, 0), (22, 4, False, True, 1, _ANY, 0)),
    # WebP lossy: 14-bit sizes in the frame; lossless: 14-bit sizes - 1 packed in 4 bytes;
    # extended: 24-bit canvas sizes - 1.
    (_WEBP + ((12, b'VP8 '),), (26, 2, False, False, 1, 16384, 0),
     (28, 2, False, False, 1, 16384, 0)),
    (_WEBP + ((12, b'VP8L'),), (21, 4, False, False, 1, 16384, 1),
     (21, 4, False, False, 16384, 16384, 1)),
    (_WEBP + ((12, b'VP8X'),), (24, 3, False, False, 1, _ANY, 1),
     (27, 3, False, False, 1, _ANY, 1)),
)


def _header_tables():
  """The numpy tables `_header_pixels` reads every format with at once: signature bytes
  [F, 32] (-1: any byte), field weights [2F, 32] (widths, then heights) and per-field signed,
  divisor, modulus and plus [2F]."""
  signatures = np.full((len(_HEADER_FORMATS), _HEADER_BYTES), -1, np.int64)
  fields = []
  for row, (parts, width, height) in enumerate(_HEADER_FORMATS):
    for offset, signature in parts:
      signatures[row, offset:offset + len(signature)] = list(signature)
  for offset, size, big_endian, signed, divisor, modulus, plus in (
      [f[1] for f in _HEADER_FORMATS] + [f[2] for f in _HEADER_FORMATS]):
    weights = np.zeros(_HEADER_BYTES, np.int64)
    order = range(size - 1, -1, -1) if big_endian else range(size)
    for k, i in enumerate(order):
      weights[offset + i] = 256 ** k
    fields.append((weights, signed, divisor, modulus, plus))
  weights, signed, divisor, modulus, plus = (np.array(column) for column in zip(*fields))
  return signatures, weights, signed, divisor, modulus, plus


_SIGNATURES, _FIELD_WEIGHTS, _SIGNED, _DIVISOR, _MODULUS, _PLUS = _header_tables()


def _header_pixels(b):
  """height * width of a PNG / GIF / BMP / WebP from its first _HEADER_BYTES bytes (int64
  [_HEADER_BYTES]); -1 for any other format.  Pure arithmetic on the bytes: never raises.

  Every format is read at once from the tables above, in a few dozen graph nodes: the header
  read runs inside the pipelines' per-image error-catching dataset, whose function is
  instantiated (at a cost per node) for every image."""
  u = tf.reduce_sum(b[None, :] * _FIELD_WEIGHTS, axis=1)
  u = tf.where(_SIGNED & (u >= 2 ** 31), 2 ** 32 - u, u)  # abs of the int32
  sides = tf.minimum((u // _DIVISOR) % _MODULUS + _PLUS, _MAX_SIDE)
  areas = tf.reduce_prod(tf.reshape(sides, [2, len(_HEADER_FORMATS)]), axis=0)
  matches = tf.reduce_all((b[None, :] == _SIGNATURES) | (_SIGNATURES < 0), axis=1)
  first = tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32)
  return tf.where(tf.reduce_any(matches), areas[first], tf.constant(-1, tf.int64))


# header_pixels_of_bytes: "not read here, let image_pixels read it".
PIXELS_NOT_READ = -2
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length
# The segments libjpeg skips or reads by their length before the frame header.
_JPEG_SEGMENTS = frozenset([0xC4, 0xCC, 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE])


def _jpeg_frame_pixels(data):
  """height * width from the first start-of-frame of the JPEG `data` (bytes), walking its marker
  segments as libjpeg does; PIXELS_NOT_READ where the walk meets anything else first (extraneous
  bytes, an unknown or misplaced marker, a bad length, the end, an empty frame)."""
  i, n = 2, len(data)
  while i < n:
    if data[i] != 0xFF:
      return PIXELS_NOT_READ
    while i < n and data[i] == 0xFF:  # fill bytes
      i += 1
    if i + 3 > n:
      return PIXELS_NOT_READ
    marker, length = data[i], (data[i + 1] << 8) | data[i + 2]
    if marker in _JPEG_STANDALONE:
      i += 1
      continue
    if marker in _JPEG_SOF:  # length, precision, height, width
      if length < 8 or i + 8 > n:
        return PIXELS_NOT_READ
      height, width = (data[i + 4] << 8) | data[i + 5], (data[i + 6] << 8) | data[i + 7]
      return height * width if height and width else PIXELS_NOT_READ
    if marker not in _JPEG_SEGMENTS or length < 2:
      return PIXELS_NOT_READ
    i += 1 + length
  return PIXELS_NOT_READ


def _table_pixels(data):
  """_header_pixels in Python over the bytes `data`: the same table and arithmetic."""
  b = np.frombuffer(data[:_HEADER_BYTES].ljust(_HEADER_BYTES, b'\0'), np.uint8).astype(np.int64)
  matches = ((b[None, :] == _SIGNATURES) | (_SIGNATURES < 0)).all(axis=1)
  if not matches.any():
    return -1
  first = int(np.argmax(matches))
  pixels = 1
  for row in (first, first + len(_HEADER_FORMATS)):  # width, height
    u = int(b @ _FIELD_WEIGHTS[row])
    if _SIGNED[row] and u >= 2 ** 31:
      u = 2 ** 32 - u
    pixels *= min((u // int(_DIVISOR[row])) % int(_MODULUS[row]) + int(_PLUS[row]), _MAX_SIDE)
  return pixels


def header_pixels_of_bytes(data):
  """What image_pixels gives for the encoded image `data` (bytes), read in Python (a few µs
  instead of a graph op per image): a JPEG's frame size, PNG / GIF / BMP / WebP by the header
  table, -1 for other formats; PIXELS_NOT_READ for a JPEG this walk does not place, whose header
  image_pixels (libjpeg) then reads."""
  if data[:3] == b'\xff\xd8\xff':
    return _jpeg_frame_pixels(data)
  return _table_pixels(data)


def is_jpeg(encoded):
  """True (bool scalar tensor) when the string scalar `encoded` starts with the JPEG signature
  tf.io.decode_image recognises JPEG by."""
  return tf.equal(tf.strings.substr(encoded, 0, 3), b'\xff\xd8\xff')


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
  return tf.cond(
      is_jpeg(encoded),
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


def decode_window(encoded, window_fn, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Decodes the part of `encoded` (a string scalar) that window_fn(height, width) -> (top,
  left, crop_height, crop_width) (int32 scalars) selects: uint8 [crop_height, crop_width, 3],
  the same pixels as slicing the `decode`d image, and the same errors (InvalidArgumentError for
  an undecodable image or one over `max_image_pixels`, as `decode`).

  JPEG: the size comes from the header and only the rows from `top` to the last row of the
  image are decoded (tf.io.decode_and_crop_jpeg, full width).  Why not the window alone:
  decoding stops after its last row, so data corrupt further down (which `decode` rejects)
  would go unnoticed; and libjpeg treats a cropped row's first and last columns as image edges
  in its chroma upsampling, so for 4:2:0 / 4:2:2 JPEGs those columns differ from a full decode
  by a level or two, and at 256 px the cropped columns save nothing (benchmarks/NOTES.md).
  Other formats are decoded whole."""
  encoded = tf.convert_to_tensor(encoded, tf.string)
  check = check_image_pixels(encoded, max_image_pixels)
  if check is not None:
    with tf.control_dependencies([check]):
      encoded = tf.identity(encoded)

  jpeg = is_jpeg(encoded)

  def header():
    shape = tf.image.extract_jpeg_shape(encoded)
    return tf.zeros([0, 0, 3], tf.uint8), shape[0], shape[1]

  def whole():
    image = decode(encoded, None)
    size = tf.shape(image)
    return image, size[0], size[1]

  image, height, width = tf.cond(jpeg, header, whole)
  top, left, crop_height, crop_width = window_fn(height, width)
  size = tf.stack([crop_height, crop_width, 3])

  def jpeg_rows():
    rows = tf.io.decode_and_crop_jpeg(encoded, tf.stack([top, 0, height - top, width]),
                                      channels=3)
    return tf.slice(rows, tf.stack([0, left, 0]), size)

  crop = tf.cond(jpeg, jpeg_rows, lambda: tf.slice(image, tf.stack([top, left, 0]), size))
  crop.set_shape([None, None, 3])
  return crop


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


# Resize methods whose rounded result at the same size is the input itself (the kernel's
# weights at integer offsets are 1 and 0, lanczos' off-centre ones ~1e-8), so that resize can
# be skipped: a 224 px center crop of a 256 px image is not resized.  Not gaussian or
# mitchellcubic (they blur).
_IDENTITY_AT_SAME_SIZE = frozenset({'bilinear', 'bicubic', TF1_BICUBIC, 'nearest', 'area',
                                    'lanczos3', 'lanczos5'})


# Methods that interpolate within the input range (weights in [0, 1] summing to 1): their
# rounded results of uint8 inputs are in 0..255 without clipping.
_CONVEX = frozenset({'bilinear', 'nearest', 'area'})


def _resize(image, size, convention):
  """Resizes uint8/float [H, W, 3] to [size, size, 3] uint8, clipped to the valid range."""
  def resized():
    out = resize_float(image, size, convention)
    if not (image.dtype == tf.uint8 and convention.resize_method in _CONVEX):
      out = tf.clip_by_value(out, 0.0, 255.0)
    return tf.cast(tf.round(out), tf.uint8)
  if image.dtype != tf.uint8 or convention.resize_method not in _IDENTITY_AT_SAME_SIZE:
    return resized()
  height, width = image.shape[0], image.shape[1]
  if height is not None and width is not None:
    return image if height == width == size else resized()
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  return tf.cond(same, lambda: tf.identity(image), resized)


# Largest static height x width for which normalize's constants cover the whole image (two
# float32 [H, W, 3] arrays: 1.2 MB at 224 px); larger images get [W, 3] rows, so that graphs and
# SavedModels of large resolutions do not carry megabytes of constants.
_FULL_NORMALIZE_MAX_PIXELS = 320 * 320


def normalize(image_0_255, convention):
  """Takes RGB pixels on the 0-255 scale (any dtype, [..., 3]); returns float32
  (x - mean) / std with the convention's per-channel mean and std."""
  x = tf.cast(image_0_255, tf.float32)
  # The same per-channel values laid out as far as the static shape allows: [H, W, 3] (an
  # elementwise op, no broadcasting), else [W, 3]; TensorFlow broadcasts a [3] vector with an
  # index computation per element (3x slower than [W, 3], which is 1.2x slower than [H, W, 3]).
  mean = np.asarray(convention.mean, np.float32)
  std = np.asarray(convention.std, np.float32)
  shape = x.shape.as_list() if x.shape.rank is not None else []
  if len(shape) >= 3 and shape[-3] and shape[-2] and (
      shape[-3] * shape[-2] <= _FULL_NORMALIZE_MAX_PIXELS):
    reps = [shape[-3], shape[-2], 1]
  elif len(shape) >= 2 and shape[-2]:
    reps = [shape[-2], 1]
  else:
    reps = [1]
  return (x - tf.constant(np.tile(mean, reps))) / tf.constant(np.tile(std, reps))


def center_crop_window(height, width, resolution, convention):
  """(top, left, side, side), int32 scalars: the evaluation crop of an image of height x width,
  the central square of side min(h, w) * R / (R + crop_padding) (at least 1)."""
  ratio = int(resolution) / (int(resolution) + convention.crop_padding)
  side = tf.maximum(1, tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32), tf.int32))
  return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def _to_resolution(crop, resolution, convention):
  out = _resize(crop, resolution, convention)
  out.set_shape([resolution, resolution, 3])
  return out


def center_crop(image, resolution, convention, small_image=False, window=False):
  """The evaluation crop of a decoded uint8 [H, W, 3] image; returns uint8 [R, R, 3].

  Crops the central square of side min(h, w) * R / (R + crop_padding) and resizes it to R x R.
  small_image: no crop, the whole image resized to R x R (a no-op for R x R inputs).
  window: `image` is already that square (as `eval_crop` decodes it): only resized.
  """
  resolution = int(resolution)
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  if small_image:
    same = tf.logical_and(tf.equal(h, resolution), tf.equal(w, resolution))
    out = tf.cond(same, lambda: tf.identity(image), lambda: _resize(image, resolution, convention))
    out.set_shape([resolution, resolution, 3])
    return out
  if window:
    return _to_resolution(image, resolution, convention)
  top, left, side, _ = center_crop_window(h, w, resolution, convention)
  crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([side, side, 3]))
  return _to_resolution(crop, resolution, convention)


def _decode_crop(encoded, window, resolution, convention, small_image, max_image_pixels):
  """Decodes the part of `encoded` the crop keeps: decode_window with window(h, w, resolution,
  convention) (center_crop_window or random_crop_window); small images are decoded whole."""
  if small_image:
    return decode(encoded, max_image_pixels)
  return decode_window(encoded, lambda h, w: window(h, w, resolution, convention),
                       max_image_pixels)


def eval_crop(encoded, resolution, convention, small_image=False,
              max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Decodes `encoded` and center-crops it: uint8 [R, R, 3] (before normalisation)."""
  window = _decode_crop(encoded, center_crop_window, resolution, convention, small_image,
                        max_image_pixels)
  return center_crop(window, resolution, convention, small_image, window=True)


def eval_preprocess(encoded, resolution, convention, small_image=False,
                    max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Encoded image bytes -> normalised float32 [R, R, 3] for evaluation and labeling.

  Deterministic, no augmentation; pure TF ops (usable inside a SavedModel signature).
  """
  return normalize(eval_crop(encoded, resolution, convention, small_image, max_image_pixels),
                   convention)


def random_crop_window(height, width, resolution, convention, seed=None):
  """(top, left, crop_height, crop_width), int32 scalars: the Inception-style random crop of an
  image of height x width (area 8-100%, aspect 3/4-4/3, 10 attempts), or the evaluation crop
  (`center_crop_window`) when every attempt failed."""
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.stack([height, width, 3]),
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
      min_object_covered=0.1, aspect_ratio_range=(3. / 4., 4. / 3.), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True, seed=seed)
  # sample_distorted_bounding_box returns the whole image when every attempt failed.
  failed = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
  center = center_crop_window(height, width, resolution, convention)
  sampled = (begin[0], begin[1], size[0], size[1])
  return tuple(tf.where(failed, c, s) for c, s in zip(center, sampled))


def random_resized_crop(image, resolution, convention, seed=None):
  """Inception-style random crop (`random_crop_window`) of a uint8 [H, W, 3] image, resized to
  uint8 [R, R, 3]."""
  shape = tf.shape(image)
  top, left, h, w = random_crop_window(shape[0], shape[1], resolution, convention, seed)
  crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([h, w, 3]))
  return _to_resolution(crop, int(resolution), convention)


def small_image_crop(image, resolution, convention):
  """Resizes to R x R when needed, reflect-pads 4 pixels and takes a random R x R crop."""
  image = center_crop(image, resolution, convention, small_image=True)
  p = SMALL_IMAGE_PAD
  padded = tf.pad(image, [[p, p], [p, p], [0, 0]], mode='REFLECT')
  return tf.image.random_crop(padded, [resolution, resolution, 3])


def train_crop(image, resolution, convention, small_image=False, flip=True, augment=None,
               window=False):
  """Training geometry and noise of a decoded uint8 [H, W, 3] image; returns uint8 [R, R, 3].

  Order as in the official code: large images: random-resized crop, flip, `augment`; small images:
  `augment` on the R x R image, then reflect-pad-crop and flip.  augment: optional callable
  uint8 [R, R, 3] -> uint8 [R, R, 3] (the student's RandAugment, see augment.py).  window:
  `image` is already the random crop (as `train_preprocess` decodes it): only resized
  (large images).
  """
  resolution = int(resolution)
  if small_image:
    image = center_crop(image, resolution, convention, small_image=True)
    if augment is not None:
      image = augment(image)
    image = small_image_crop(image, resolution, convention)
  elif window:
    image = _to_resolution(image, resolution, convention)
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
  window = _decode_crop(encoded, random_crop_window, resolution, convention, small_image,
                        max_image_pixels)
  image = train_crop(window, resolution, convention, small_image, flip, augment, window=True)
  return normalize(image, convention)
