"""ImageNet-C corruptions for any image source, using tensorflow-datasets' implementations.

The 15 benchmark + 4 extra corruption functions come from
`tensorflow_datasets.image_classification.corruptions` (the code TFDS uses to build
imagenet2012_corrupted); this module only finds out which of them can run here, makes them
deterministic per image, and wraps them for tf.data (`make_image_transform`, for DATA's
make_eval_dataset(image_transform=...)).

What each needs (TFDS reaches them through lazy imports):
- numpy only: gaussian_noise, shot_noise, fog, contrast, speckle_noise;
- Pillow: pixelate, jpeg_compression;
- scikit-image: impulse_noise, glass_blur, brightness, gaussian_blur, saturate;
- scipy: zoom_blur;  opencv (opencv-python-headless) + scikit-image + scipy: defocus_blur,
  elastic_transform, spatter;
- snow, motion_blur: cv2 + scipy / PIL; TFDS runs ImageMagick's command-line tool
  (`convert IN -motion-blur RxS+A OUT`) once per image for them, which we answer in-process with
  evaluate/motion_blur.py (the same pixels as ImageMagick 6 Q16, no binary needed);
- frost: the 5+ frost pictures of ImageNet-C (frost1.png ... frost6.jpg from hendrycks/robustness
  ImageNet-C/imagenet_c/imagenet_c/frost/, also shipped in the `imagecorruptions` and `imagenet-c`
  pip packages): pass frost_dir, set NS_FROST_DIR, or pip install one of those packages.
TFDS's frost, snow and motion_blur assume 224x224 inputs: other sizes are resized to 224,
corrupted and resized back. The severity parameters are ImageNet's (calibrated for 224 px): on
small images (32 px CIFAR) blurs and elastic transforms are relatively stronger; pass
work_size=224 to corrupt every image at 224 px instead.
"""

import contextlib
import functools
import glob
import importlib
import importlib.util
import os
import subprocess
import threading
import warnings
import zlib

import numpy as np

from noisy_student_tf.evaluate import motion_blur
from noisy_student_tf.evaluate.robustness import (IMAGENET_C_CORRUPTIONS,
                                                  IMAGENET_C_EXTRA_CORRUPTIONS, SEVERITIES)

ALL_CORRUPTIONS = IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS
_TFDS_MODULE = 'tensorflow_datasets.image_classification.corruptions'
_FIXED_SIZE = 224
_NEEDS_FIXED_SIZE = frozenset({'frost', 'snow', 'motion_blur'})

# python module -> pip package that provides it
_PIP = {'cv2': 'opencv-python-headless', 'skimage': 'scikit-image', 'scipy': 'scipy',
        'PIL': 'pillow'}
_NEEDS = {
    'gaussian_noise': (), 'shot_noise': (), 'fog': (), 'contrast': (), 'speckle_noise': (),
    'pixelate': ('PIL',), 'jpeg_compression': ('PIL',),
    'impulse_noise': ('skimage',), 'glass_blur': ('skimage',), 'brightness': ('skimage',),
    'gaussian_blur': ('skimage',), 'saturate': ('skimage',), 'zoom_blur': ('scipy',),
    'defocus_blur': ('cv2',), 'elastic_transform': ('cv2', 'skimage', 'scipy'),
    'spatter': ('cv2', 'skimage'),
    'snow': ('cv2', 'scipy', 'PIL'), 'motion_blur': ('cv2', 'PIL'),
    'frost': ('cv2', 'frost_images'),
}
# Keeps numpy's global RNG (which the TFDS functions draw from) private to one call at a time.
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _tfds_corruptions():
  return importlib.import_module(_TFDS_MODULE)


@functools.lru_cache(maxsize=None)
def _has_module(name):
  return importlib.util.find_spec(name) is not None


class _InProcessConvert:
  """Stands in for the `subprocess` module inside TFDS's corruptions module: its one command,
  `BINARY IN.png -motion-blur RxS+A OUT`, is run with evaluate/motion_blur.py (same pixels)."""
  CalledProcessError = subprocess.CalledProcessError

  @staticmethod
  def check_output(args, **unused_kwargs):
    """Runs `[binary, in, '-motion-blur', geometry, out]`; returns b''. ValueError otherwise."""
    from PIL import Image  # pylint: disable=import-outside-toplevel
    args = [str(a) for a in args]
    if len(args) != 5 or args[2] != '-motion-blur':
      raise ValueError(f'unexpected ImageMagick command {args!r}: expected '
                       '[binary, input, "-motion-blur", geometry, output]')
    radius, sigma, angle = motion_blur.parse_geometry(args[3])
    with Image.open(args[1]) as picture:
      pixels = np.asarray(picture)
    Image.fromarray(motion_blur.motion_blur(pixels, radius, sigma, angle)).save(
        args[4], format='PNG')
    return b''


_IN_PROCESS_CONVERT = _InProcessConvert()


def _package_frost_dir():
  """The frost picture folder of an installed imagecorruptions / imagenet_c package, or None."""
  for package in ('imagecorruptions', 'imagenet_c'):
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
      continue
    for root in spec.submodule_search_locations:
      folder = os.path.join(root, 'frost')
      if os.path.isdir(folder):
        return folder
  return None


def frost_files(frost_dir=None):
  """Sorted frost picture paths from frost_dir, $NS_FROST_DIR or an installed package ([] if none)."""
  folder = frost_dir or os.environ.get('NS_FROST_DIR') or _package_frost_dir()
  if not folder:
    return []
  if not os.path.isdir(folder):
    raise ValueError(f'frost_dir {folder!r} is not a folder')
  files = [p for p in glob.glob(os.path.join(folder, 'frost*'))
           if p.lower().endswith(('.png', '.jpg', '.jpeg'))]
  return sorted(files)


def _missing(name, frost_dir=None):
  """What corruption `name` lacks here, as a sentence, or None when it can run."""
  missing = []
  for need in _NEEDS[name]:
    if need == 'frost_images':
      if len(frost_files(frost_dir)) < 5:
        missing.append('the ImageNet-C frost pictures frost1.png..frost6.jpg (pass frost_dir / '
                       'set NS_FROST_DIR to a folder holding them, or pip install imagecorruptions)')
    elif not _has_module(need):
      missing.append(f'the python module {need} (pip install {_PIP[need]})')
  if missing:
    return f'{name} needs ' + ' and '.join(missing)
  return None


def corruption_status(frost_dir=None):
  """Which corruptions can run here: {name: None (available) or a sentence saying what is
  missing and how to install it}, for the 15 benchmark and 4 extra corruptions."""
  return {name: _missing(name, frost_dir) for name in ALL_CORRUPTIONS}


def available_corruptions(frost_dir=None):
  """The corruption names (standard order) whose dependencies are all present here."""
  return tuple(n for n, why in corruption_status(frost_dir).items() if why is None)


def check_corruptions(names, severities=SEVERITIES, frost_dir=None):
  """Validates corruption names and severities before any work.

  Returns (tuple of names, tuple of int severities). Raises ValueError naming an unknown
  corruption, a severity outside 1..5, or what an unavailable corruption needs.
  """
  names = tuple(names)
  if not names:
    raise ValueError('no corruption named')
  unknown = [n for n in names if n not in _NEEDS]
  if unknown:
    raise ValueError(f'unknown corruption(s) {unknown}; expected some of {list(ALL_CORRUPTIONS)}')
  bad = [s for s in severities if int(s) != s or int(s) not in SEVERITIES]
  if bad or not severities:
    raise ValueError(f'severities must be integers in 1..5, got {list(severities)}')
  problems = [why for why in (_missing(n, frost_dir) for n in names) if why]
  if problems:
    raise ValueError('; '.join(problems))
  return names, tuple(int(s) for s in severities)


def _resize(image, size):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  h, w = size
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _image_seed(image, name, severity, seed):
  """A per-image seed: the same pixels get the same corruption whatever the batch or order."""
  key = f'{seed}:{name}:{severity}:'.encode() + image.tobytes()
  return zlib.crc32(key) & 0x7fffffff


@contextlib.contextmanager
def _seeded_skimage_noise(name, seed):
  """impulse_noise draws from skimage.util.random_noise, which ignores numpy's global state and
  seeds a fresh generator per call: give it `seed` for the duration (caller holds _LOCK)."""
  if name != 'impulse_noise':
    yield
    return
  util = importlib.import_module('skimage.util')
  original = util.random_noise
  util.random_noise = functools.partial(original, rng=seed)
  try:
    yield
  finally:
    util.random_noise = original


def corrupt(image, name, severity, *, seed=0, frost_dir=None, work_size=None):
  """Applies TFDS's ImageNet-C corruption `name` at `severity` (1..5) to one image.

  image: uint8 numpy [H, W, 3]. seed: mixed with the image's pixels into the random state, so the
  result is deterministic per image. work_size: corrupt at work_size x work_size and resize back
  (frost, snow and motion_blur always work at 224). Returns uint8 [H, W, 3].
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'corrupt expects a uint8 [H, W, 3] image, got {image.dtype} {image.shape}')
  if name not in _NEEDS:
    raise ValueError(f'unknown corruption {name!r}; expected one of {list(ALL_CORRUPTIONS)}')
  if int(severity) not in SEVERITIES:
    raise ValueError(f'severity must be in 1..5, got {severity!r}')
  module = _tfds_corruptions()
  size = image.shape[:2]
  work = work_size or (_FIXED_SIZE if name in _NEEDS_FIXED_SIZE else None)
  x = image if not work or size == (work, work) else _resize(image, (work, work))
  with _LOCK:
    state = np.random.get_state()
    np.random.seed(_image_seed(image, name, int(severity), seed))
    try:
      if name in ('snow', 'motion_blur'):
        module.subprocess = _IN_PROCESS_CONVERT  # its ImageMagick call, answered in-process
      if name == 'frost':
        files = frost_files(frost_dir)
        if len(files) < 5:
          raise ValueError(_missing(name, frost_dir))
        module.FROST_FILENAMES[:] = files
      with warnings.catch_warnings(), _seeded_skimage_noise(name, np.random.randint(2**31)):
        warnings.simplefilter('ignore', DeprecationWarning)  # scipy.ndimage.interpolation
        out = getattr(module, name)(x, int(severity))
    finally:
      np.random.set_state(state)
  out = np.asarray(out, dtype=np.uint8)
  if out.ndim == 2:
    out = np.repeat(out[..., None], 3, axis=2)
  if out.shape[:2] != size:
    out = _resize(np.ascontiguousarray(out), size)
  return np.ascontiguousarray(out[..., :3])


def make_image_transform(name, severity, *, seed=0, frost_dir=None, work_size=None):
  """A TF function uint8 [R, R, 3] -> uint8 [R, R, 3] applying `corrupt` through
  tf.numpy_function, for make_eval_dataset(image_transform=...). Validates first (ValueError)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  check_corruptions([name], [severity], frost_dir)

  def np_fn(image):
    return corrupt(image, name, int(severity), seed=seed, frost_dir=frost_dir,
                   work_size=work_size)

  def transform(image):
    out = tf.numpy_function(np_fn, [image], tf.uint8, stateful=False)
    out.set_shape(image.shape)
    return out
  return transform
