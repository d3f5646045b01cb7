"""evaluate/motion_blur.py against ImageMagick 6's -motion-blur, and snow / motion_blur without it.

The reference digests were made with `convert in.png -motion-blur GEOMETRY out.png` of
ImageMagick 6.9.11-60 Q16 (Debian 12) on the image `_pattern()` builds; where a real ImageMagick
is installed, the comparison also runs on random images and through TFDS's own functions.
"""

import hashlib
import importlib
import shutil
import subprocess

import numpy as np
import pytest

from noisy_student_tf.evaluate import corruptions, motion_blur

# (image, geometry) -> (sum of the output's pixels, first 16 hex digits of its sha256)
IMAGEMAGICK_6_9_11_Q16 = {
    ('rgb', '10x3+-45.0'): (159942, '5cd4cec1b700dbed'),
    ('rgb', '15x8+-45.0'): (165688, '9ac923dd1b6cf33c'),
    ('rgb', '12x4+-93.27'): (152770, '8ee182b2d706052c'),
    ('gray', '10x3+-45.0'): (50938, 'c7f1765add9107e3'),
    ('gray', '15x8+-45.0'): (59735, '7b6262d6efcd6612'),
    ('gray', '12x4+-93.27'): (46048, '3515fc7ab9f8902d'),
}


def _pattern(kind):
  yy, xx = np.mgrid[0:20, 0:23]
  rgb = np.stack([(xx * 37 + yy * 11) % 256, (xx * xx + 3 * yy) % 256, ((xx ^ yy) * 29) % 256],
                 -1).astype(np.uint8)
  return rgb if kind == 'rgb' else rgb[..., 1].copy()


def _imagemagick():
  """Path of a real ImageMagick `convert`, or None."""
  path = shutil.which('convert')
  if not path:
    return None
  try:
    out = subprocess.run([path, '-version'], capture_output=True, text=True, timeout=20).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return path if 'Version: ImageMagick' in out else None


@pytest.mark.parametrize('kind,geometry', sorted(IMAGEMAGICK_6_9_11_Q16))
def test_matches_imagemagick_reference_pixels(kind, geometry):
  out = motion_blur.motion_blur(_pattern(kind), *motion_blur.parse_geometry(geometry))
  assert out.shape == _pattern(kind).shape and out.dtype == np.uint8
  digest = hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()[:16]
  assert (int(out.astype(np.int64).sum()), digest) == IMAGEMAGICK_6_9_11_Q16[(kind, geometry)]


def test_kernel_taps_and_geometry():
  weights, dx, dy = motion_blur.kernel(10, 3, -45)
  assert len(weights) == 21 and abs(weights.sum() - 1) < 1e-12
  assert np.all(np.diff(weights) < 0)  # one-sided: the pixel itself weighs most
  assert (dx[0], dy[0]) == (0, 0) and (dx[10], dy[10]) == (7, -7)  # up and to the right
  _, dx, dy = motion_blur.kernel(12, 4, -90)
  assert np.all(dx == 0) and np.array_equal(dy, -np.arange(25))
  assert motion_blur.parse_geometry('15x5+-45.0') == (15.0, 5.0, -45.0)
  assert motion_blur.parse_geometry('12x8+30') == (12.0, 8.0, 30.0)
  for bad in ('15x5', 'ax5+3', '0x5+3'):
    with pytest.raises(ValueError, match='geometry'):
      motion_blur.parse_geometry(bad)
  with pytest.raises(ValueError, match='uint8'):
    motion_blur.motion_blur(np.zeros((4, 4), np.float32), 10, 3, -45)


def test_snow_and_motion_blur_run_without_imagemagick(monkeypatch):
  monkeypatch.setenv('PATH', '')  # no binary can be found: the blur must run in-process
  status = corruptions.corruption_status()
  assert status['snow'] is None and status['motion_blur'] is None
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
  for name in ('snow', 'motion_blur'):
    out = corruptions.corrupt(image, name, 3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 5
    assert np.array_equal(out, corruptions.corrupt(image, name, 3))  # deterministic per image


@pytest.mark.skipif(_imagemagick() is None, reason='ImageMagick is not installed')
@pytest.mark.parametrize('name,severity', [('motion_blur', 1), ('motion_blur', 5), ('snow', 2),
                                           ('snow', 5)])
def test_tfds_corruption_identical_with_the_real_binary(name, severity):
  """TFDS's own function with the real ImageMagick gives exactly corrupt()'s pixels."""
  module = importlib.import_module('tensorflow_datasets.image_classification.corruptions')
  image = np.random.default_rng(severity).integers(0, 256, (224, 224, 3)).astype(np.uint8)
  ours = corruptions.corrupt(image, name, severity)
  binary = _imagemagick()
  saved = module.subprocess, module._imagemagick_bin  # pylint: disable=protected-access
  module.subprocess, module._imagemagick_bin = subprocess, lambda: binary  # pylint: disable=protected-access
  state = np.random.get_state()
  try:
    np.random.seed(corruptions._image_seed(image, name, severity, 0))  # pylint: disable=protected-access
    np.random.randint(2**31)  # corrupt() draws impulse_noise's seed first, whatever the name
    theirs = getattr(module, name)(image, severity)
  finally:
    np.random.set_state(state)
    module.subprocess, module._imagemagick_bin = saved  # pylint: disable=protected-access
  assert np.array_equal(np.asarray(theirs, np.uint8), ours)


@pytest.mark.skipif(_imagemagick() is None, reason='ImageMagick is not installed')
def test_random_images_identical_with_the_real_binary(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  for shape, geometry in [((31, 24, 3), '20x15+-45.0'), ((40, 17), '12x8+-117.3'),
                          ((64, 64, 3), '15x12+-61.5')]:
    image = rng.integers(0, 256, shape).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / 'in.png')
    subprocess.check_output([_imagemagick(), str(tmp_path / 'in.png'), '-motion-blur', geometry,
                             str(tmp_path / 'out.png')])
    with Image.open(tmp_path / 'out.png') as picture:
      reference = np.asarray(picture)
    if reference.ndim == 3 and image.ndim == 2:
      reference = reference[..., 0]
    assert np.array_equal(motion_blur.motion_blur(image, *motion_blur.parse_geometry(geometry)),
                          reference), geometry
