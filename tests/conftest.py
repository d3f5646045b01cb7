"""Shared test fixtures: quiet TensorFlow logs, the real CIFAR-10 JPEGs from ../shared, tiny models."""

import os
import pathlib
import tarfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_TAR = pathlib.Path(os.environ.get(
    'NS_CIFAR10_TAR', REPO.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'))

# The tiny model every test trains: width/depth 0.25, 32 px, small-image strides.
TINY = dict(width=0.25, depth=0.25, resolution=32, small_image=True)


@pytest.fixture(scope='session')
def cifar10_dir(tmp_path_factory):
  """Path of the extracted real CIFAR-10 JPEG folders (train/<class>/*.jpg, test/<class>/*.jpg)."""
  if not CIFAR10_TAR.exists():
    pytest.fail(f'{CIFAR10_TAR} not found; set NS_CIFAR10_TAR to cifar10-jpeg.tar.gz')
  out = tmp_path_factory.mktemp('cifar10')
  with tarfile.open(CIFAR10_TAR) as tar:
    tar.extractall(out, filter='data')
  root = out
  while not (root / 'train').exists():
    (root,) = [p for p in root.iterdir() if p.is_dir()]
  return root


@pytest.fixture(scope='session')
def cifar10_small(cifar10_dir, tmp_path_factory):
  """A small class-balanced subset as symlinked folders: train 200/class, test 100/class."""
  out = tmp_path_factory.mktemp('cifar10_small')
  for split, n in (('train', 200), ('test', 100)):
    for cls in sorted(p.name for p in (cifar10_dir / split).iterdir()):
      dst = out / split / cls
      dst.mkdir(parents=True)
      for f in sorted((cifar10_dir / split / cls).iterdir())[:n]:
        (dst / f.name).symlink_to(f)
  return out
