"""RandAugment on whole batches, for the training step (TrainConfig.randaug_on='accelerator'):
the student's noise run on the accelerator after the batch is formed, for hosts with few CPU
cores per accelerator.

The policy is augment.py's, image by image: every image of the batch draws its own N ops
(uniformly from the 16 official ops), its own random signs and Cutout centres, with the same
uniform-to-choice mapping as `augment.make_randaugment`; the magnitude M is fixed, so every op's
argument is the same Python constant as there (`augment.op_arguments`).  The ops themselves
give the per-image ops' results exactly (same float32 operations in the same order; checked on
CPU by tests/test_batch_augment.py): colour ops are vectorised over the batch with per-image
statistics (AutoContrast's range, Equalize's histogram by one segment sum over image x channel
x value), and the geometric ops (Rotate, ShearX/Y, TranslateX/Y, each sign) are one gather per
image through the same sampling map the per-image ops use (`augment._sampling_map`, the
transform kernel's own nearest samples and fill 128).

Selection: each of the N layers applies, per image, the op that image drew.  'gather' computes
an op only on the images that drew it (gathered, transformed, put back by one inverse
permutation): the least work, with dynamic shapes (GPU, CPU; XLA refuses it).  'mask' computes
every op on the whole batch and selects per image: static shapes, for XLA / TPU.  Under XLA the
results are exact for the integer and geometric ops only: XLA fuses the float32 arithmetic
(e.g. multiply-adds), which moves some truncated values by a level (measured on CPU-XLA at
M = 27, 32 px: AutoContrast 1.2% of the values by 1, Color 0.04% by 1, Sharpness 0.5% by up to
4, its blend factor 4.96 scaling a level of the smoothed image), and its stateless random
numbers are another stream than the plain kernels' (the same distribution).

Order: for large images the host still does crop and flip (the official order: crop, flip,
RandAugment); for small images (32 px) RandAugment comes first officially, so the host only
resizes to R x R and the step does RandAugment, the extra Cutout, the reflect-pad crop and the
flip (`make_batch_noise`).
"""

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import augment
from noisy_student_tf.data import preprocessing

SELECTIONS = ('gather', 'mask')
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def branches():
  """The (op name, negate) pairs in augment.make_randaugment's branch order: one per op, two
  (positive, negated) for the signed ops; 21 in all."""
  return [(name, negate) for name in augment.OP_NAMES
          for negate in ((False, True) if name in augment.SIGNED_OPS else (False,))]


def draw_branches(u, num_ops=len(augment.OP_NAMES)):
  """Branch indices (into `branches()`) from uniforms u [..., 2] (op, sign), with
  make_randaugment's mapping: op = min(floor(16 u0), 15), negated when u1 < 0.5."""
  first, is_signed = [], []
  count = 0
  for name in augment.OP_NAMES:
    first.append(count)
    is_signed.append(int(name in augment.SIGNED_OPS))
    count += 1 + is_signed[-1]
  picks = tf.minimum(tf.cast(u[..., 0] * num_ops, tf.int32), num_ops - 1)
  negate = tf.cast(u[..., 1] < 0.5, tf.int32)
  return (tf.gather(tf.constant(first, tf.int32), picks) +
          tf.gather(tf.constant(is_signed, tf.int32), picks) * negate)


# --- the ops on a batch ---------------------------------------------------------------------------

def autocontrast(images):
  """augment.autocontrast of every image of uint8 [N, H, W, 3] (per-image, per-channel range)."""
  lo = tf.cast(tf.reduce_min(images, axis=[1, 2]), tf.float32)
  hi = tf.cast(tf.reduce_max(images, axis=[1, 2]), tf.float32)
  stretch = hi > lo
  scale = tf.where(stretch, 255.0 / tf.where(stretch, hi - lo, 1.0), 1.0)
  offset = tf.where(stretch, -lo * scale, 0.0)
  scaled = tf.cast(images, tf.float32) * scale[:, None, None] + offset[:, None, None]
  return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


def equalize(images):
  """augment.equalize of every image of uint8 [N, H, W, 3]: per image and channel the official
  (PIL) lookup table from a 256-bin histogram."""
  n = tf.shape(images)[0]
  index = (tf.cast(images, tf.int32) + tf.constant([0, 256, 512], tf.int32) +
           768 * tf.range(n)[:, None, None, None])                      # v + 256 c + 768 i
  # A segment sum rather than Bincount: XLA compiles it (TPU).
  hist = tf.math.unsorted_segment_sum(tf.ones_like(index), index, 768 * n)
  hist = tf.reshape(hist, [n, 3, 256])
  top = tf.reduce_max(tf.where(hist > 0, tf.range(256), -1), axis=2)    # highest used value
  top_count = tf.gather(hist, top, batch_dims=2)
  step = (tf.reduce_sum(hist, axis=2) - top_count) // 255               # [N, 3]
  safe = tf.maximum(step, 1)[..., None]
  lut = (tf.cumsum(hist, axis=2) + safe // 2) // safe
  lut = tf.clip_by_value(tf.concat([tf.zeros_like(lut[..., :1]), lut[..., :-1]], axis=2), 0, 255)
  lut = tf.where((step == 0)[..., None], tf.range(256), lut)
  return tf.gather(tf.reshape(tf.cast(lut, tf.uint8), [-1]), index)


def contrast(images, factor):
  """augment.contrast of every image of uint8 [N, H, W, 3] (static H, W): blend towards the
  official constant H * W // 256."""
  if factor == 1.0:
    return images
  degenerate = augment.contrast_degenerate(images.shape[1], images.shape[2])
  return augment._blend(tf.constant(float(degenerate), tf.float32),
                        tf.cast(images, tf.float32), factor)


def sharpness(images, factor):
  """augment.sharpness of every image of uint8 [N, H, W, 3]: the official 3x3 smoothing (the
  same float32 products summed in the same order) blended inside a 1-pixel border."""
  if factor == 1.0:
    return images
  h, w = images.shape[1], images.shape[2]
  x = tf.cast(images, tf.float32)
  weights = augment._SMOOTH_WEIGHTS
  # As augment._smooth_rows: every step acc - (-tap), products by the negated weights (the
  # same float32 sums; a chain of Adds on static shapes becomes one AddN under Grappler, in
  # another order, so the training step's tf.function would not match the per-image op).
  minus = x * tf.constant(-weights[0, 0])
  original = x[:, 1:h - 1, 1:w - 1]
  acc = x[:, :h - 2, :w - 2] * tf.constant(weights[0, 0])
  for dy in range(3):
    for dx in range(3):
      if (dy, dx) == (1, 1):
        acc = acc - original * tf.constant(-weights[1, 1])
      elif (dy, dx) != (0, 0):
        acc = acc - minus[:, dy:dy + h - 2, dx:dx + w - 2]
  inner = augment._blend(tf.floor(acc), original, factor)
  middle = tf.concat([images[:, 1:-1, :1], inner, images[:, 1:-1, -1:]], axis=2)
  return tf.concat([images[:, :1], middle, images[:, -1:]], axis=1)


def cutout(images, pad_size, centers):
  """augment.cutout of every image of uint8 [N, H, W, 3] with its own centre, int32 [N, 2]
  (cy, cx): rows [cy - pad, cy + pad) x columns [cx - pad, cx + pad), clipped, set to 128."""
  pad_size = int(pad_size)
  if pad_size <= 0:
    return images
  h, w = images.shape[1], images.shape[2]
  cy, cx = centers[:, 0, None, None], centers[:, 1, None, None]
  top = tf.clip_by_value(cy - pad_size, 0, h)
  bottom = tf.clip_by_value(cy + pad_size, top, h)
  left = tf.clip_by_value(cx - pad_size, 0, w)
  right = tf.clip_by_value(cx + pad_size, left, w)
  rows, cols = tf.range(h)[None, :, None], tf.range(w)[None, None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  return tf.where(inside[..., None], tf.constant(augment.FILL, tf.uint8), images)


def _transform_of(name, value, height, width):
  """The 8 float32 values of the transform augment's op `name` applies for `value`."""
  if name == 'Rotate':
    with tf.init_scope():  # the same float32 ops as augment.rotate, as constants
      return augment.rotation_transform(value, height, width).numpy().tolist()
  return {'ShearX': [1.0, value, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
          'ShearY': [1.0, 0.0, 0.0, value, 1.0, 0.0, 0.0, 0.0],
          'TranslateX': [1.0, 0.0, value, 0.0, 1.0, 0.0, 0.0, 0.0],
          'TranslateY': [1.0, 0.0, 0.0, 0.0, 1.0, value, 0.0, 0.0]}[name]


def sampling_maps(arguments, height, width):
  """int32 numpy [len(branches()), H * W]: per branch the flat input pixel every output pixel
  takes (H * W: the fill), the identity for non-geometric branches and zero arguments.
  arguments: augment.op_arguments at the level."""
  identity = np.arange(height * width, dtype=np.int32)
  maps = []
  for name, negate in branches():
    value = arguments.get(name, 0)
    if name not in GEOMETRIC_OPS or value == 0:
      maps.append(identity)
      continue
    value = -value if negate else value
    transform = tuple(float(np.float32(t)) for t in _transform_of(name, value, height, width))
    maps.append(augment._sampling_map(transform, height, width).reshape([-1]))
  return np.stack(maps).astype(np.int32)


def remap(images, maps):
  """Every image of uint8 [N, H, W, 3] sampled through its own map, int32 [N, H * W] (flat
  input index, H * W = fill 128)."""
  h, w = images.shape[1], images.shape[2]
  n = tf.shape(images)[0]
  pixels = tf.concat([tf.reshape(images, [n, h * w, 3]),
                      tf.fill([n, 1, 3], tf.constant(augment.FILL, tf.uint8))], axis=1)
  return tf.reshape(tf.gather(pixels, maps, batch_dims=1), [n, h, w, 3])


# --- the policy -----------------------------------------------------------------------------------

def _op_groups(magnitude, height, width, translate_const, cutout_const, wrap_levels):
  """[(branch ids, fn(images [N, H, W, 3], branch [N], centers [N, 2]) -> images)]: every branch
  in exactly one group; all geometric branches form one group (one gather by per-image maps)."""
  a = augment.op_arguments(magnitude, translate_const, cutout_const)
  maps = tf.constant(sampling_maps(a, height, width))
  colour = {
      'AutoContrast': autocontrast,
      'Equalize': equalize,
      'Invert': augment.invert,
      'Posterize': lambda x: augment.posterize(x, a['Posterize'], wrap_levels),
      'Solarize': lambda x: augment.solarize(x, a['Solarize'], wrap_levels),
      'Color': lambda x: augment.color(x, a['Color']),
      'Contrast': lambda x: contrast(x, a['Contrast']),
      'Brightness': lambda x: augment.brightness(x, a['Brightness']),
      'Sharpness': lambda x: sharpness(x, a['Sharpness']),
      'SolarizeAdd': lambda x: augment.solarize_add(x, a['SolarizeAdd']),
  }
  ids = {b: i for i, b in enumerate(branches())}
  groups = [([i for (name, _), i in ids.items() if name in GEOMETRIC_OPS],
             lambda x, branch, centers: remap(x, tf.gather(maps, branch)))]
  for name, fn in colour.items():
    groups.append(([ids[(name, False)]], lambda x, branch, centers, fn=fn: fn(x)))
  groups.append(([ids[('Cutout', False)]],
                 lambda x, branch, centers: cutout(x, a['Cutout'], centers)))
  return groups


def _apply_gather(images, branch, centers, groups):
  """Each group's op on the images whose branch is in it, put back in place."""
  indices, outputs = [], []
  for members, fn in groups:
    take = tf.reshape(tf.where(tf.reduce_any(branch[:, None] == members, axis=1)), [-1])
    take = tf.cast(take, tf.int32)
    indices.append(take)
    outputs.append(fn(tf.gather(images, take), tf.gather(branch, take), tf.gather(centers, take)))
  order = tf.math.invert_permutation(tf.concat(indices, 0))
  return tf.gather(tf.concat(outputs, 0), order)


def _apply_mask(images, branch, centers, groups):
  """Every group's op on the whole batch, each image's own result selected."""
  out = images
  for members, fn in groups:
    chosen = tf.reduce_any(branch[:, None] == members, axis=1)[:, None, None, None]
    out = tf.where(chosen, fn(images, branch, centers), out)
  return out


def make_batch_ops(magnitude, resolution, translate_const=augment.IMAGENET_TRANSLATE_CONST,
                   cutout_const=augment.IMAGENET_CUTOUT_CONST, wrap_levels=True,
                   selection='gather'):
  """The official ops at level `magnitude` on whole batches: a callable (uint8 [N, R, R, 3],
  branch int32 [N] (indices into `branches()`), centers int32 [N, 2] (Cutout's (cy, cx))) ->
  uint8 [N, R, R, 3], every image through the op (and sign) of its own branch.
  selection: 'gather' or 'mask' (module doc).  Raises ValueError on a bad selection."""
  if selection not in SELECTIONS:
    raise ValueError(f'selection must be one of {SELECTIONS}, got {selection!r}')
  resolution = int(resolution)
  groups = _op_groups(float(magnitude), resolution, resolution, translate_const, cutout_const,
                      wrap_levels)
  apply = _apply_gather if selection == 'gather' else _apply_mask

  def ops(images, branch, centers):
    images = tf.ensure_shape(images, [None, resolution, resolution, 3])
    return tf.ensure_shape(apply(images, branch, centers, groups),
                           [None, resolution, resolution, 3])
  return ops


def draw(n, num_layers, resolution, seed=None):
  """Per image the draws of make_randaugment: (branch int32 [n, L], indices into `branches()`,
  centers int32 [n, L + 1, 2], the Cutout centres of every layer and of the small-image Cutout).
  seed: int [2] for stateless draws, or None (stateful)."""
  shape = tf.stack([n, num_layers + 1, 4])  # per layer: op, sign, Cutout row, Cutout column
  u = tf.random.uniform(shape) if seed is None else tf.random.stateless_uniform(shape, seed)
  centers = tf.minimum(tf.cast(u[..., 2:] * resolution, tf.int32), resolution - 1)
  return draw_branches(u[:, :num_layers, :2]), centers


def make_batch_randaugment(num_layers, magnitude, resolution, small_image=False,
                           wrap_levels=True, selection='gather'):
  """augment.make_randaugment's noise on whole batches: a callable (uint8 [B, R, R, 3], seed)
  -> uint8 [B, R, R, 3], every image with its own draws (`draw`); None when num_layers == 0.

  seed: int32/int64 [2] for stateless draws (a different one every call: e.g. from the step
  and the replica), or None for TensorFlow's stateful random ops.  small_image: the official
  32 px constants and the extra Cutout of pad R // 4 after RandAugment, as make_randaugment.
  selection: 'gather' or 'mask' (module doc).  Raises ValueError on a bad N, M or selection.
  """
  # make_randaugment checks N and M with the per-image pipeline's messages.
  if augment.make_randaugment(num_layers, magnitude, resolution) is None:
    return None
  num_layers, resolution = int(num_layers), int(resolution)
  consts = {}
  if small_image:
    consts = dict(translate_const=resolution // 8, cutout_const=resolution // 8)
  ops = make_batch_ops(magnitude, resolution, wrap_levels=wrap_levels, selection=selection,
                       **consts)
  final_pad = resolution // 4 if small_image else 0

  def augment_batch(images, seed=None):
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
      raise ValueError(f'batch RandAugment takes uint8 images, got {images.dtype.name}')
    branch, centers = draw(tf.shape(images)[0], num_layers, resolution, seed)
    for layer in range(num_layers):
      images = ops(images, branch[:, layer], centers[:, layer])
    if final_pad:
      images = cutout(images, final_pad, centers[:, num_layers])
    return images

  augment_batch.num_layers = num_layers
  augment_batch.magnitude = float(magnitude)
  augment_batch.selection = selection
  return augment_batch


def crop_and_flip(images, pad, flip, seed=None):
  """The small-image training geometry after RandAugment on uint8 [B, R, R, 3]: per image a
  random R x R crop of the image reflect-padded by `pad` (as preprocessing.small_image_crop),
  then (flip=True) a horizontal flip with probability 1/2."""
  r = images.shape[1]
  n = tf.shape(images)[0]
  u = tf.random.uniform([n, 3]) if seed is None else tf.random.stateless_uniform([n, 3], seed)
  offsets = tf.minimum(tf.cast(u[:, :2] * (2 * pad + 1), tf.int32), 2 * pad)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  line = tf.range(r)[None]
  rows = offsets[:, :1] + line
  cols = offsets[:, 1:] + line
  if flip:
    cols = tf.where(u[:, 2:] < 0.5, offsets[:, 1:] + (r - 1) - line, cols)
  out = tf.gather(tf.gather(padded, rows, batch_dims=1), cols, axis=2, batch_dims=1)
  return tf.ensure_shape(out, images.shape)


def host_crop(image, resolution, convention, small_image=False, flip=True):
  """What the host pipeline still does to a decoded uint8 [H, W, 3] image when RandAugment runs
  in the step: large images the training crop and flip (they come before RandAugment); small
  images only the resize to R x R (RandAugment, crop and flip follow in `make_batch_noise`).
  Returns uint8 [R, R, 3]."""
  if small_image:
    return preprocessing.center_crop(image, resolution, convention, small_image=True)
  return preprocessing.train_crop(image, resolution, convention, small_image=False, flip=flip)


def make_batch_noise(num_layers, magnitude, resolution, convention, small_image=False, flip=True,
                     wrap_levels=True, selection='gather'):
  """The rest of the student's input after `host_crop`, on whole batches: a callable
  (uint8 [B, R, R, 3], seed int [2] or None) -> normalised float32 [B, R, R, 3]: RandAugment
  (make_batch_randaugment), for small images the reflect-pad crop and flip, then
  preprocessing.normalize.  None when num_layers == 0."""
  batch_randaugment = make_batch_randaugment(num_layers, magnitude, resolution, small_image,
                                             wrap_levels, selection)
  if batch_randaugment is None:
    return None

  def noise(images, seed=None):
    seeds = [None, None] if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    images = batch_randaugment(images, seeds[0])
    if small_image:
      images = crop_and_flip(images, preprocessing.SMALL_IMAGE_PAD, flip, seeds[1])
    return preprocessing.normalize(images, convention)

  return noise
