"""The student's input noise: RandAugment(N, M) with the official Noisy Student ops, written
here as TensorFlow ops on uint8 images.

The reference is google-research/noisystudent's randaugment.py (the code behind the paper's
numbers).  Per image, N times: one of the 16 ops below is picked uniformly and always applied
(the official per-op `prob` is drawn but unused), at the fixed level M, with a random sign
where the official op negates its argument (Rotate, ShearX/Y, TranslateX/Y).  Levels run 0-10
and extrapolate linearly above 10 (the paper uses N=2, M=27 for L2); every argument is computed
from M with the official Python expressions (`op_arguments`), f = M / 10, c = 1.8 f + 0.1.

  op            official arg. at M    what the op does (uint8 in, uint8 out); fill   above M=10
  AutoContrast  -                     per channel v*scale + offset in float32,       -
                                      scale = 255/(hi-lo), offset = -lo*scale,
                                      clipped, truncated; constant channel kept
  Equalize      -                     per channel 256-bin histogram h, step =        -
                                      (H*W - h[max]) // 255; lut = (cumsum(h) +
                                      step//2) // step shifted right (lut[0] = 0),
                                      clipped; v -> lut[v]; step 0: identity
  Invert        -                     255 - v                                        -
  Rotate        +-30 f degrees        rotation about the centre (counter-clockwise   -
                                      for + as displayed); nearest, fill 128
  Posterize     bits = int(4 f)       v & (0xFF << s), s = min((8-bits) mod 256, 7)  wraps (s)
  Solarize      t = int(256 f)        v < t ? v : 255 - v                            wraps (t)
  SolarizeAdd   a = int(110 f)        v < 128 ? min(v + a, 255) : v                  -
  Color         c                     blend(gray, image, c), gray = TF's             -
                                      rgb_to_grayscale of the uint8 image
  Contrast      c                     blend(m, image, c), m = min(H*W // 256, 255):  -
                                      the official "mean" is sum(256-bin
                                      histogram) / 256 = pixel count / 256
  Brightness    c                     blend(0, image, c) = trunc(clip(c * v))        -
  Sharpness     c                     blend(smooth, image, c); smooth = kernel       -
                                      [1 1 1; 1 5 1; 1 1 1] / 13, float32 products
                                      summed row by row (TF's plain depthwise
                                      conv, VALID), truncated; 1-px border kept
  ShearX        +-0.3 f               out (x, y) <- in (x + l y, y); nearest, 128    -
  ShearY        +-0.3 f               out (x, y) <- in (x, y + l x); nearest, 128    -
  TranslateX    +-f * translate_const out (x, y) <- in (x + p, y); nearest, 128      -
  TranslateY    +-f * translate_const out (x, y) <- in (x, y + p); nearest, 128      -
  Cutout        pad = int(f *         rows [cy - pad, cy + pad) x columns [cx - pad, -
                cutout_const)         cx + pad), clipped to the image, set to 128;
                                      (cy, cx) uniform in [0, H) x [0, W)

blend(a, b, c) is the official one: in float32, a + c (b - a), clipped to [0, 255] and cast
to uint8 (truncation); c = 0 gives a, c = 1 gives b (so Color/Contrast/Brightness/Sharpness
are the identity at M = 5).  Every colour and integer op above is bit-exact with the official
op, at every level.  One caveat, Sharpness: the official op calls tf.nn.depthwise_conv2d, whose
float32 rounding depends on the TensorFlow build (with oneDNN, TensorFlow's x86 default since
2.9, it uses fused multiply-adds, moving ~0.2% of the truncated smoothed values by one level);
here the sum is written out as elementwise float32 ops with the plain kernel's order (TF1's
result, and the same on every machine).

Geometry: the official ops call tf.contrib.image.transform/rotate/translate on the image with
a fourth all-ones channel ("wrap"), with NEAREST sampling and zeros outside, then set every
pixel whose fourth channel came out 0 to (128, 128, 128) ("unwrap").  With nearest sampling the
fourth channel is 0 exactly where the sample falls outside the image, so this equals one
`ImageProjectiveTransformV3` with NEAREST interpolation and constant fill 128, which is what
Rotate and ShearX/Y use here (same float32 transform: contrib's rotation matrix about
((W-1)/2, (H-1)/2); the kernel rounds input coordinates half away from zero).  Translation by
p maps every output column x to the input column round(x + p); when that is x + s for one
integer s (all levels of the official constants; checked in float32 at build time) it is done
as an exact slice-and-fill, otherwise with the same transform.  Cutout fills with 128 as well:
the official code appends its replace value [128] * 3 to every op that takes `replace`.

Above level 10 ("WRAPS"): the official Posterize and Solarize pass Python ints that TensorFlow
converts to the uint8 image dtype, so they wrap modulo 256, and TensorFlow's shift kernels
clamp a shift to 0..7.  Posterize: s = (8 - bits) mod 256, clamped to 7, so bits 0-1 (M < 5)
and bits >= 9 (M >= 22.5; M = 27 gives bits 10, s = 254 -> 7) keep 1 bit ([100, 180, 250] ->
[0, 128, 128]); only bits = 8 (20 <= M < 22.5) is the identity.  Solarize: t mod 256, so
t = 256 (M = 10), 512 (M = 20), 768 (M = 30) become 0 (a full invert) and M = 27's 691 becomes
179 ([100, 180, 250] -> [100, 75, 5]).  `wrap_levels=False` gives the clamped variant instead
(bits clamped to 1..8 and t to 256: Posterize is the identity from M = 20 on and Solarize from
M = 10 on), which is not what the official code trains with.

Constants: translate_const = 100 and cutout_const = 40 pixels (the official ImageNet values;
not scaled with the resolution, so at M = 27 a shift of 270 px and a 216 px square); for
small-image models (32 px: CIFAR-10, SVHN) the official recipe passes R // 8 for both and
follows RandAugment with a Cutout of pad R // 4 (a square of side R / 2, fill 128) on every
image (preprocessing.py, _cifar10_preprocess_for_train).

Speed: one random draw per image; tf.switch_case runs only the picked op; colour ops are
elementwise float32 passes, the integer ops (Invert, Posterize, Solarize, SolarizeAdd) bitwise
or carry-free ops on the image bitcast to 32-bit words (TensorFlow's uint8 kernels work value by
value), histograms an integer Bincount, and lookups (Equalize's table, the geometric ops'
cached sampling maps) GatherNd, cheaper per element on CPU than GatherV2.
"""

import functools
import math

import numpy as np
import tensorflow as tf

MAX_LEVEL = 10.0
FILL = 128
IMAGENET_TRANSLATE_CONST = 100
IMAGENET_CUTOUT_CONST = 40
OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
            'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
            'SolarizeAdd', 'Cutout')
SIGNED_OPS = frozenset({'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY'})


def op_arguments(magnitude, translate_const=IMAGENET_TRANSLATE_CONST,
                 cutout_const=IMAGENET_CUTOUT_CONST):
  """The official argument of every op with one at level `magnitude` (a dict op name ->
  Python number, the unsigned value for the signed ops), computed with the official
  expressions, before any uint8 conversion."""
  level = float(magnitude)
  enhance = (level / MAX_LEVEL) * 1.8 + 0.1
  translate = (level / MAX_LEVEL) * float(translate_const)
  shear = (level / MAX_LEVEL) * 0.3
  return {
      'Rotate': (level / MAX_LEVEL) * 30.0, 'Posterize': int((level / MAX_LEVEL) * 4),
      'Solarize': int((level / MAX_LEVEL) * 256), 'SolarizeAdd': int((level / MAX_LEVEL) * 110),
      'Color': enhance, 'Contrast': enhance, 'Brightness': enhance, 'Sharpness': enhance,
      'ShearX': shear, 'ShearY': shear, 'TranslateX': translate, 'TranslateY': translate,
      'Cutout': int((level / MAX_LEVEL) * cutout_const),
  }


def posterize_shift(bits, wrap_levels=True):
  """The right/left shift (0..7) the official Posterize applies for `bits`.

  Officially 8 - bits is converted to uint8 (wrapping modulo 256) and TensorFlow's shift
  kernels clamp the shift to 7.  wrap_levels=False clamps bits to 1..8 instead."""
  if wrap_levels:
    return min((8 - int(bits)) % 256, 7)
  return 8 - min(8, max(1, int(bits)))


def solarize_threshold(threshold, wrap_levels=True):
  """The threshold the official Solarize compares uint8 pixels with (0..255, or 256 = no-op
  in the clamped variant).  Officially the Python int is converted to uint8: modulo 256."""
  if wrap_levels:
    return int(threshold) % 256
  return min(256, max(0, int(threshold)))


# --- colour and integer ops -------------------------------------------------------------------

def _as_uint8(image):
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0), tf.uint8)
  return image


def _row(values, image):
  """A per-channel vector `values` [3] laid out as [W, 3] for broadcasting against `image`
  [..., W, 3] (as is when W is not static).  TensorFlow broadcasts a [3] vector with an index
  computation per element, several times slower than the vectorised [W, 3] row."""
  width = image.shape[-2]
  if width is None:
    return values
  return tf.tile(tf.reshape(values, [1, 3]), [width, 1])


def _channel_offsets(image):
  """int32 0, 256, 512 per channel, broadcastable against the uint8 [..., W, 3] `image`: the
  index of value v of channel c in a [3 * 256] table is v + 256 c."""
  return _row(tf.constant([0, 256, 512], tf.int32), image)


def _blend(image1, image2, factor):
  """Official blend of two float32 images with a Python float factor, as uint8."""
  if factor == 0.0:
    return tf.cast(image1, tf.uint8)
  if factor == 1.0:
    return tf.cast(image2, tf.uint8)
  temp = image1 + tf.constant(factor, tf.float32) * (image2 - image1)
  return tf.cast(tf.clip_by_value(temp, 0.0, 255.0), tf.uint8)


def autocontrast(image):
  """Per channel, stretches [min, max] to [0, 255] (float32, truncated); constant channels
  are left unchanged."""
  image = _as_uint8(image)
  lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float32)
  hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float32)
  stretch = hi > lo
  # A constant channel gets scale 1 and offset 0: v * 1 + 0 is v exactly, so no select.
  scale = tf.where(stretch, 255.0 / tf.where(stretch, hi - lo, 1.0), 1.0)
  offset = tf.where(stretch, -lo * scale, 0.0)
  scaled = tf.cast(image, tf.float32) * _row(scale, image) + _row(offset, image)
  # No clip needed before the truncating cast: lo <= v gives lo * scale <= v * scale (rounding
  # is monotone) and offset is -(lo * scale) exactly, so the sum is >= 0; and it stays below
  # 256 (at most 255.0005 over every lo < hi <= 255 and lo <= v <= hi, checked exhaustively in
  # float32), where truncation equals the official clip-then-truncate.
  return tf.cast(scaled, tf.uint8)


def equalize(image):
  """Per channel histogram equalisation with the official (PIL) lookup table."""
  image = _as_uint8(image)
  index = tf.cast(image, tf.int32) + _channel_offsets(image)             # v + 256 c
  hist = tf.reshape(tf.raw_ops.Bincount(arr=tf.reshape(index, [-1]), size=768,
                                        weights=tf.zeros([0], tf.int32)), [3, 256])
  top = tf.reduce_max(tf.where(hist > 0, tf.range(256), -1), axis=1)     # highest used value
  top_count = tf.gather(hist, top, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - top_count) // 255                # [3]
  safe = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(hist, axis=1) + safe // 2) // safe
  lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], axis=1), 0, 255)
  lut = tf.where((step == 0)[:, None], tf.range(256)[None, :], lut)
  # GatherNd with one-element index rows: the same lookup, ~0.6x the CPU of GatherV2 per
  # element (whose CPU kernel copies every 1-byte slice with a bounds check and memcpy).
  return tf.gather_nd(tf.reshape(tf.cast(lut, tf.uint8), [768]), index[..., None])


def _words(image):
  """The uint8 `image` as uint32 words of 4 values (a free bitcast), or None when its shape is
  not static or its size not a multiple of 4.  TensorFlow's CPU kernels do uint8 arithmetic
  and bitwise ops value by value, several times slower per value than on 32-bit words; a
  bitwise op, or an add or multiply that never carries from one byte into the next, gives
  the same bytes on words."""
  if not image.shape.is_fully_defined() or image.shape.num_elements() % 4:
    return None
  return tf.bitcast(tf.reshape(image, [-1, 4]), tf.uint32)


def _from_words(words, image):
  """`_words` back to uint8 with the shape of `image`."""
  return tf.reshape(tf.bitcast(words, tf.uint8), image.shape)


def _byte_words(value):
  """uint32 constant with `value` (0..255) in each of its 4 bytes."""
  return tf.constant(int(value) * 0x01010101, tf.uint32)


def _flags_as_words(condition):
  """bool `condition` (the shape of a `_words` image) as uint32 words with 1 in each byte
  where it holds, 0 elsewhere."""
  return _words(tf.cast(condition, tf.uint8))


def invert(image):
  """255 - v."""
  image = _as_uint8(image)
  words = _words(image)
  if words is not None:
    return _from_words(tf.bitwise.invert(words), image)
  return tf.constant(255, tf.uint8) - image


def posterize(image, bits, wrap_levels=True):
  """Keeps the top 8 - shift bits of every value (shift from `posterize_shift`)."""
  image = _as_uint8(image)
  shift = posterize_shift(bits, wrap_levels)
  if shift == 0:
    return image
  keep = (0xFF << shift) & 0xFF
  words = _words(image)
  if words is not None:
    return _from_words(tf.bitwise.bitwise_and(words, _byte_words(keep)), image)
  return tf.bitwise.bitwise_and(image, tf.constant(keep, tf.uint8))


def solarize(image, threshold, wrap_levels=True):
  """v < t ? v : 255 - v, with t from `solarize_threshold`."""
  image = _as_uint8(image)
  t = solarize_threshold(threshold, wrap_levels)
  if t >= 256:
    return image
  if t == 0:
    return invert(image)
  # 255 - v is v ^ 255: xor with 255 where v >= t, with 0 elsewhere (no select: it is slow).
  words = _words(image)
  if words is not None:  # flags 0/1 per byte times 255: 0 or 255 per byte, no carry
    mask = _flags_as_words(image >= tf.constant(t, tf.uint8)) * tf.constant(255, tf.uint32)
    return _from_words(tf.bitwise.bitwise_xor(words, mask), image)
  return tf.bitwise.bitwise_xor(image, _mask_unless(image < tf.constant(t, tf.uint8)))


def _mask_unless(condition):
  """uint8 255 where `condition` is false, 0 where it holds (1 - 1 = 0, 0 - 1 wraps to 255;
  not 0 - x, which Grappler turns into a Neg that uint8 lacks)."""
  return tf.cast(condition, tf.uint8) - tf.constant(1, tf.uint8)


def solarize_add(image, addition, threshold=128):
  """v < threshold ? clip(v + addition, 0, 255) : v (integer arithmetic, no wrap)."""
  image = _as_uint8(image)
  addition = int(addition)
  if addition == 0:
    return image
  threshold = int(threshold)
  words = _words(image)
  if words is not None and addition > 0 and (addition >= 255 or
                                              threshold - 1 + addition <= 255):
    flags = _flags_as_words(image < tf.constant(threshold, tf.uint8))
    if addition >= 255:  # every value below the threshold becomes 255: or with 255
      return _from_words(tf.bitwise.bitwise_or(words, flags * tf.constant(255, tf.uint32)),
                         image)
    # v + a <= 255 wherever it is added: no byte carries into the next.
    return _from_words(words + flags * tf.constant(addition, tf.uint32), image)
  threshold = tf.constant(threshold, tf.uint8)
  if addition < 0:
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)
  # min(v + a, 255) >= v: keep it where v < threshold (masked), v elsewhere (max with 0).
  if addition >= 255:
    added = tf.fill(tf.shape(image), tf.constant(255, tf.uint8))
  else:
    added = (tf.minimum(image, tf.constant(255 - addition, tf.uint8)) +
             tf.constant(addition, tf.uint8))
  return tf.maximum(image, tf.bitwise.bitwise_and(added, _mask_unless(image >= threshold)))


def color(image, factor):
  """blend(grayscale, image, factor), the grayscale from tf.image.rgb_to_grayscale (uint8)."""
  image = _as_uint8(image)
  if factor == 1.0:
    return image
  pixels = tf.cast(image, tf.float32)
  gray = _grayscale_levels(pixels)
  # The gray plane repeated over the 3 channels by a matmul with ones (exact: g * 1, and
  # vectorised, unlike broadcasting a size-1 channel axis).
  gray = tf.reshape(tf.matmul(tf.reshape(gray, [-1, 1]), tf.ones([1, 3], tf.float32)),
                    tf.shape(image))
  return _blend(gray, pixels, factor)


_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def grayscale(image):
  """tf.image.rgb_to_grayscale of a uint8 [..., 3] image, as uint8 [...] (no channel axis):
  x = v * float32(1 / 255) per channel, (x_r w_r + x_g w_g) + x_b w_b in float32, times 255.5,
  truncated.  Written out on the three planes (the same float32 operations in the same order;
  TF's tensordot goes through a slower [pixels, 3] x [3, 1] matmul)."""
  return _grayscale(tf.cast(_as_uint8(image), tf.float32))


def _grayscale(pixels):
  """`grayscale` of float32 [..., 3] pixel values 0..255 (integers)."""
  return tf.cast(_gray_scaled(pixels), tf.uint8)


def _grayscale_levels(pixels):
  """`grayscale` of float32 [..., 3] pixel values 0..255 as float32 (the uint8 levels)."""
  # The scaled gray is in [0, 255.5 * 0.9999]: truncation to uint8 is the floor, so one floor
  # stands for the uint8 round trip.
  return tf.floor(_gray_scaled(pixels))


def _gray_scaled(pixels):
  x = pixels * tf.constant(1.0 / 255, tf.float32)
  r, g, b = (plane * tf.constant(w, tf.float32)
             for plane, w in zip(tf.unstack(x, axis=-1), _GRAY_WEIGHTS))
  return (r + g + b) * tf.constant(255.5, tf.float32)


def contrast_degenerate(height, width):
  """The value the official Contrast blends towards: sum(histogram) / 256 = H * W / 256,
  truncated and clipped into uint8 (not the image mean: a bug of the official op, kept)."""
  return min(int(height) * int(width) // 256, 255)


def contrast(image, factor):
  """blend(constant H*W // 256 (clipped to 255), image, factor)."""
  image = _as_uint8(image)
  if factor == 1.0:
    return image
  h, w = image.shape[0], image.shape[1]
  if h is not None and w is not None:
    mean = tf.constant(float(contrast_degenerate(h, w)), tf.float32)
  else:
    size = tf.shape(image)
    mean = tf.cast(tf.minimum(size[0] * size[1] // 256, 255), tf.float32)
  return _blend(mean, tf.cast(image, tf.float32), factor)


def brightness(image, factor):
  """blend(black, image, factor) = trunc(clip(factor * v, 0, 255))."""
  image = _as_uint8(image)
  if factor == 1.0:
    return image
  if factor == 0.0:
    return tf.zeros_like(image)
  scaled = tf.constant(factor, tf.float32) * tf.cast(image, tf.float32)
  if factor > 0:  # c v >= 0: only the upper bound of the official clip can bind
    return tf.cast(tf.minimum(scaled, 255.0), tf.uint8)
  return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


_SMOOTH_WEIGHTS = (np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13.0))


def smooth(image):
  """The official Sharpness degenerate inside the 1-pixel border, float32 [H-2, W-2, 3]: the
  3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 (float32 weights) as TensorFlow's plain (Eigen, TF1)
  depthwise convolution computes it: products rounded to float32 and summed row by row,
  left to right.  Written out as elementwise ops so that the result does not depend on the
  build: with oneDNN on (TensorFlow's x86 default since 2.9) tf.nn.depthwise_conv2d uses fused
  multiply-adds, which moves about 0.2% of the truncated values by one level."""
  acc, _ = _smooth_rows(image)
  size = tf.shape(image)
  return tf.reshape(acc[:, :(size[1] - 2) * 3], [size[0] - 2, size[1] - 2, 3])


# float32 values per block row of the flat taps below: 64 bytes, the largest SIMD alignment.
_ALIGN = 16


def _smooth_rows(image):
  """(smoothed, original), float32 [H - 2, S] each, S = 3 W rounded up to a multiple of 16:
  row y is `smooth` of image row y + 1 over the full width W, flattened (after (W - 2) 3 values
  come wrapped-around garbage), and the image's own values at the same places."""
  h, w = (image.shape[k] if image.shape[k] is not None else tf.shape(image)[k] for k in (0, 1))
  stride = (w * 3 + _ALIGN - 1) // _ALIGN * _ALIGN
  flat = tf.reshape(image, [h, w * 3])
  if image.shape[1] is None or image.shape[1] * 3 % _ALIGN:
    flat = tf.pad(flat, [[0, 0], [0, stride - w * 3]])
  # On the flattened image (rows of `stride` values) the tap (dy, dx) of every output value is
  # one contiguous slice at offset dy stride + 3 dx.  Three copies shifted by 3 dx make every
  # tap a slice of whole 64-byte blocks of one of them, which TensorFlow's slice kernels return
  # as a view, without copying.  16 padding values keep the last shifted copy inside the array.
  x = tf.cast(tf.concat([tf.reshape(flat, [-1]), tf.zeros([_ALIGN], tf.uint8)], 0), tf.float32)
  length = h * stride
  blocks = length // _ALIGN
  row, n = stride // _ALIGN, (h - 2) * stride // _ALIGN
  # The sum is the plain convolution's chain t00 + t01 + ... + t22, each step written as
  # acc - (-t) (the same float32 result: negation is exact), with the eight outer taps taken
  # from products by the negated weight.  A chain of Adds on static shapes is turned by
  # Grappler's AddOpsRewrite into one AddN, which sorts its inputs by name (and whose kernel
  # moves a reusable input buffer to the front): another order.  Subtractions it leaves alone.
  negated = tf.constant(-_SMOOTH_WEIGHTS[0, 0])  # the eight outer taps share one weight
  minus = x * negated
  x1 = x[3:3 + length]
  outer = [tf.reshape(minus, [blocks + 1, _ALIGN])[:blocks],
           tf.reshape(x1 * negated, [blocks, _ALIGN]),
           tf.reshape(minus[6:6 + length], [blocks, _ALIGN])]
  original = tf.reshape(x1, [blocks, _ALIGN])[row:row + n]
  acc = tf.reshape(x, [blocks + 1, _ALIGN])[:n] * tf.constant(_SMOOTH_WEIGHTS[0, 0])
  for dy in range(3):
    for dx in range(3):
      if (dy, dx) == (1, 1):
        acc = acc - original * tf.constant(-_SMOOTH_WEIGHTS[1, 1])
      elif (dy, dx) != (0, 0):
        acc = acc - outer[dx][dy * row:dy * row + n]
  shape = [h - 2, stride]
  return tf.reshape(acc, shape), tf.reshape(original, shape)


def sharpness(image, factor):
  """blend(smoothed, image, factor); smoothed = the PIL SMOOTH 3x3 kernel / 13 (`smooth`,
  truncated to uint8) inside a 1-pixel border of the original pixels."""
  image = _as_uint8(image)
  if factor == 1.0:
    return image
  smoothed, original = _smooth_rows(image)
  # The smoothed values are in [0, 256) (non-negative weights summing to 1 + 3e-8): floor is
  # the official clip and uint8 truncation, without leaving float32.
  inner = _blend(tf.floor(smoothed), original, factor)
  size = tf.shape(image)
  inner = tf.reshape(inner[:, :(size[1] - 2) * 3], [size[0] - 2, size[1] - 2, 3])
  middle = tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1)
  return tf.concat([image[:1], middle, image[-1:]], axis=0)


# --- geometric ops ------------------------------------------------------------------------------

def _transform(image, transform):
  """ImageProjectiveTransformV3 of one uint8 [H, W, 3] image with a float32 [8] transform
  (output (x, y) <- input ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1),
  NEAREST sampling, constant fill 128.  transform: a tensor, or 8 Python / numpy numbers.

  With a constant transform and a static size, the kernel runs once (cached) on an image of
  pixel indices, and every image is then one gather of whole pixels by that map: the same
  samples and fills by construction, without the kernel's per-channel coordinate arithmetic."""
  height, width = image.shape[0], image.shape[1]
  if height is not None and width is not None and not isinstance(transform, tf.Tensor):
    source = _sampling_map(tuple(float(np.float32(t)) for t in transform), height, width)
    pixels = tf.concat([tf.reshape(image, [height * width, 3]),
                        tf.fill([1, 3], tf.constant(FILL, tf.uint8))], axis=0)
    # GatherNd of whole pixel rows (index [H, W, 1]): cheaper per pixel than GatherV2.
    return tf.gather_nd(pixels, tf.constant(source[..., None]))
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
      output_shape=tf.shape(image)[:2], fill_value=tf.constant(float(FILL), tf.float32),
      interpolation='NEAREST', fill_mode='CONSTANT')[0]
  return tf.ensure_shape(out, image.shape)


@functools.lru_cache(maxsize=256)
def _sampling_map(transform, height, width):
  """int32 numpy [H, W]: the flat input index y * W + x that ImageProjectiveTransformV3
  (NEAREST, constant fill) samples at every output pixel for the 8 float32 values `transform`,
  H * W (one past the last pixel: the fill) where it samples outside the image."""
  with tf.init_scope():
    index = tf.reshape(tf.range(height * width, dtype=tf.int32), [1, height, width, 1])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=index, transforms=tf.constant([transform], tf.float32),
        output_shape=[height, width], fill_value=float(height * width),
        interpolation='NEAREST', fill_mode='CONSTANT')
    return out.numpy()[0, :, :, 0]


def rotation_transform(degrees, height, width):
  """contrib.image's rotation transform for `degrees` (float32 ops, as officially: radians =
  degrees * pi / 180, rotation about ((W-1)/2, (H-1)/2))."""
  radians = tf.constant(degrees, tf.float32) * tf.constant(math.pi / 180.0, tf.float32)
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
  y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
  return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def rotate(image, degrees):
  """Rotation by `degrees` about the centre (counter-clockwise for positive degrees as
  displayed), nearest sampling, fill 128."""
  image = _as_uint8(image)
  if degrees == 0:
    return image
  height, width = image.shape[0], image.shape[1]
  if height is not None and width is not None:
    with tf.init_scope():  # a constant: computed once with the same float32 ops
      transform = rotation_transform(degrees, height, width).numpy().tolist()
  else:
    size = tf.shape(image)
    transform = rotation_transform(degrees, size[0], size[1])
  return _transform(image, transform)


def shear_x(image, level):
  """Output (x, y) <- input (x + level * y, y), nearest, fill 128."""
  image = _as_uint8(image)
  if level == 0:
    return image
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
  """Output (x, y) <- input (x, y + level * x), nearest, fill 128."""
  image = _as_uint8(image)
  if level == 0:
    return image
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def _round_half_away(values):
  return np.where(values >= 0, np.floor(values + 0.5), np.ceil(values - 0.5))


def integer_shift(pixels, length):
  """The integer s with round(x + pixels) == x + s for every x in [0, length) as the
  transform kernel computes it (float32 sum, std::round), or None when there is none."""
  x = np.arange(length, dtype=np.float32)
  source = _round_half_away((x + np.float32(pixels)).astype(np.float64))
  shifts = np.unique(source - np.arange(length))
  return int(shifts[0]) if len(shifts) == 1 else None


def _shift(image, s, axis):
  """out[..., i, ...] = image[..., i + s, ...] along `axis` (0 rows, 1 columns), fill 128."""
  n = image.shape[axis]
  if s == 0:
    return image
  if abs(s) >= n:
    return tf.fill(tf.shape(image), tf.constant(FILL, tf.uint8))
  fill_shape = [abs(s), image.shape[1], 3] if axis == 0 else [image.shape[0], abs(s), 3]
  fill = tf.fill(fill_shape, tf.constant(FILL, tf.uint8))
  if axis == 0:
    kept = image[s:] if s > 0 else image[:n + s]
  else:
    kept = image[:, s:] if s > 0 else image[:, :n + s]
  parts = [kept, fill] if s > 0 else [fill, kept]
  return tf.concat(parts, axis=axis)


def _translate(image, pixels, axis):
  image = _as_uint8(image)
  if pixels == 0:
    return image
  n, other = image.shape[axis], image.shape[1 - axis]
  s = integer_shift(pixels, n) if n is not None and other is not None else None
  if s is not None:
    return _shift(image, s, axis)
  p = float(pixels)
  transform = [1.0, 0.0, p, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 1 else \
      [1.0, 0.0, 0.0, 0.0, 1.0, p, 0.0, 0.0]
  return _transform(image, transform)


def translate_x(image, pixels):
  """Output (x, y) <- input (x + pixels, y) (content moves left for positive pixels),
  nearest, fill 128."""
  return _translate(image, pixels, axis=1)


def translate_y(image, pixels):
  """Output (x, y) <- input (x, y + pixels) (content moves up for positive pixels),
  nearest, fill 128."""
  return _translate(image, pixels, axis=0)


def cutout(image, pad_size, center):
  """Sets rows [cy - pad, cy + pad) x columns [cx - pad, cx + pad) (clipped to the image) to
  128; center: int32 [2] tensor (cy, cx)."""
  image = _as_uint8(image)
  pad_size = int(pad_size)
  if pad_size <= 0:
    return image
  size = tf.shape(image)
  center = tf.cast(center, tf.int32)
  top = tf.clip_by_value(center[0] - pad_size, 0, size[0])
  bottom = tf.clip_by_value(center[0] + pad_size, top, size[0])
  left = tf.clip_by_value(center[1] - pad_size, 0, size[1])
  right = tf.clip_by_value(center[1] + pad_size, left, size[1])
  # Pieces put together with concat (copies), several times faster than a masked select.
  band = image[top:bottom]
  square = tf.fill([bottom - top, right - left, 3], tf.constant(FILL, tf.uint8))
  band = tf.concat([band[:, :left], square, band[:, right:]], axis=1)
  out = tf.concat([image[:top], band, image[bottom:]], axis=0)
  return tf.ensure_shape(out, image.shape)


# --- the policy ---------------------------------------------------------------------------------

def build_ops(magnitude, resolution=None, translate_const=IMAGENET_TRANSLATE_CONST,
              cutout_const=IMAGENET_CUTOUT_CONST, wrap_levels=True, seed=None):
  """The 16 official ops at level `magnitude`, in OP_NAMES order: a dict op name ->
  fn(image, negate=False, center=None) -> uint8 image.

  negate: Python bool or scalar bool tensor, the official random sign (used by SIGNED_OPS);
  center: int32 [2] (cy, cx) of the Cutout square (drawn uniformly when None).  resolution
  and seed are accepted for compatibility and unused (the ops take the size from the image;
  randomness lives in `make_randaugment`)."""
  del resolution, seed
  a = op_arguments(magnitude, translate_const, cutout_const)

  def signed(fn, value):
    def op(image, negate=False, center=None):
      del center
      if isinstance(negate, bool):
        return fn(image, -value if negate else value)
      return tf.cond(negate, lambda: fn(image, -value), lambda: fn(image, value))
    return op

  def plain(fn):
    def op(image, negate=False, center=None):
      del negate, center
      return fn(image)
    return op

  def cutout_op(image, negate=False, center=None):
    del negate
    image = _as_uint8(image)
    if center is None:
      size = tf.shape(image)
      center = tf.stack([tf.random.uniform([], 0, size[0], tf.int32),
                         tf.random.uniform([], 0, size[1], tf.int32)])
    return cutout(image, a['Cutout'], center)

  ops = {
      'AutoContrast': plain(autocontrast),
      'Equalize': plain(equalize),
      'Invert': plain(invert),
      'Rotate': signed(rotate, a['Rotate']),
      'Posterize': plain(lambda im: posterize(im, a['Posterize'], wrap_levels)),
      'Solarize': plain(lambda im: solarize(im, a['Solarize'], wrap_levels)),
      'Color': plain(lambda im: color(im, a['Color'])),
      'Contrast': plain(lambda im: contrast(im, a['Contrast'])),
      'Brightness': plain(lambda im: brightness(im, a['Brightness'])),
      'Sharpness': plain(lambda im: sharpness(im, a['Sharpness'])),
      'ShearX': signed(shear_x, a['ShearX']),
      'ShearY': signed(shear_y, a['ShearY']),
      'TranslateX': signed(translate_x, a['TranslateX']),
      'TranslateY': signed(translate_y, a['TranslateY']),
      'SolarizeAdd': plain(lambda im: solarize_add(im, a['SolarizeAdd'])),
      'Cutout': cutout_op,
  }
  return {name: ops[name] for name in OP_NAMES}


def make_randaugment(num_layers, magnitude, resolution, small_image=False, seed=None,
                     wrap_levels=True):
  """The student's noise as a callable uint8 [R, R, 3] -> uint8 [R, R, 3] (None when
  num_layers == 0), usable eagerly and inside tf.data map.

  num_layers: N ops per image; magnitude: M on the official scale (0-10, extrapolated above 10:
  the paper uses N=2, M=27 for L2).  small_image: the official 32 px recipe (translate and
  cutout constants R // 8, and an extra Cutout of pad R // 4 after RandAugment).  seed: makes
  the sequence of draws reproducible (a tf.random.Generator from that seed; None: TensorFlow's
  stateful random ops).  wrap_levels: False for the clamped Posterize/Solarize variant (see the
  module doc; the official behaviour is True).
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
  ops = build_ops(magnitude, translate_const=consts.get('translate_const',
                                                         IMAGENET_TRANSLATE_CONST),
                  cutout_const=consts.get('cutout_const', IMAGENET_CUTOUT_CONST),
                  wrap_levels=wrap_levels)
  # One branch per (op, sign): signed ops get two, so a branch has only Python constants.
  branches, first_branch = [], []
  for name in OP_NAMES:
    first_branch.append(len(branches))
    for negate in ((False, True) if name in SIGNED_OPS else (False,)):
      branches.append((ops[name], negate))
  first_branch = tf.constant(first_branch, tf.int32)
  is_signed = tf.constant([name in SIGNED_OPS for name in OP_NAMES], tf.int32)
  final_pad = resolution // 4 if small_image else 0
  generator = None if seed is None else tf.random.Generator.from_seed(int(seed))

  def draw(shape):
    if generator is not None:
      return generator.uniform(shape, dtype=tf.float32)
    return tf.random.uniform(shape, dtype=tf.float32)

  def augment(image):
    image = _as_uint8(image)
    if image.shape.rank != 3 or None in image.shape.as_list():
      image = tf.ensure_shape(image, [resolution, resolution, 3])
    height, width = image.shape[0], image.shape[1]
    u = draw([num_layers + 1, 4])  # per layer: op, sign, cutout row, cutout column
    picks = tf.minimum(tf.cast(u[:, 0] * len(OP_NAMES), tf.int32), len(OP_NAMES) - 1)
    negates = u[:, 1] < 0.5
    centers = tf.stack([tf.minimum(tf.cast(u[:, 2] * height, tf.int32), height - 1),
                        tf.minimum(tf.cast(u[:, 3] * width, tf.int32), width - 1)], axis=1)
    branch = tf.gather(first_branch, picks) + tf.gather(is_signed, picks) * tf.cast(
        negates, tf.int32)
    for layer in range(num_layers):
      center = centers[layer]
      fns = [lambda fn=fn, negate=negate, image=image, center=center: fn(image, negate, center)
             for fn, negate in branches]
      image = tf.ensure_shape(tf.switch_case(branch[layer], fns), [height, width, 3])
    if final_pad:
      image = cutout(image, final_pad, centers[num_layers])
    return image

  augment.ops = ops
  augment.num_layers = num_layers
  augment.magnitude = float(magnitude)
  augment.wrap_levels = wrap_levels
  return augment
