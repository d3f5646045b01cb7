"""Shared test fixtures: quiet TensorFlow logs, the real CIFAR-10 JPEGs from ../shared, tiny models."""

import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

_BLOCK_TENSORFLOW = textwrap.dedent('''
    import importlib.abc, sys
    class BlockTensorflow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name == 'tensorflow' or name.startswith('tensorflow.'):
          raise ImportError('tensorflow is blocked in this test')
    sys.meta_path.insert(0, BlockTensorflow())
''')


def run_without_tensorflow(script, *args, env=None, timeout=300):
  """Runs the Python `script` (dedented) in a fresh process where importing tensorflow raises
  ImportError, with the repository on PYTHONPATH; returns the CompletedProcess (text output)."""
  env = {**os.environ, **(env or {}), 'PYTHONPATH': str(REPO)}
  return subprocess.run([sys.executable, '-c', _BLOCK_TENSORFLOW + textwrap.dedent(script), *args],
                        env=env, capture_output=True, text=True, timeout=timeout)
CIFAR10_TAR = pathlib.Path(os.environ.get(
    'NS_CIFAR10_TAR', REPO.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'))

# The tiny model every test trains: width/depth 0.25, 32 px, small-image strides.
TINY = dict(width=0.25, depth=0.25, resolution=32, small_image=True)


def first_train_jpegs(count):
  """The JPEG bytes of the first `count` training images of the CIFAR-10 archive, in archive
  order (fails the test when the archive is missing)."""
  if not CIFAR10_TAR.exists():
    pytest.fail(f'{CIFAR10_TAR} not found; set NS_CIFAR10_TAR to cifar10-jpeg.tar.gz')
  found = []
  with tarfile.open(CIFAR10_TAR) as tar:
    for member in tar:
      parts = member.name.split('/')
      if member.isfile() and len(parts) >= 3 and parts[-3] == 'train':
        found.append(tar.extractfile(member).read())
        if len(found) == count:
          break
  return found


def _extract(tmp_path_factory, name, per_split):
  """Extracts from the archive the first `per_split[split]` images of each class of each split."""
  if not CIFAR10_TAR.exists():
    pytest.fail(f'{CIFAR10_TAR} not found; set NS_CIFAR10_TAR to cifar10-jpeg.tar.gz')
  out = tmp_path_factory.mktemp(name)
  taken = {}
  with tarfile.open(CIFAR10_TAR) as tar:
    for member in tar:
      parts = pathlib.PurePosixPath(member.name).parts
      if not member.isfile() or len(parts) < 3 or parts[-3] not in per_split:
        continue
      key = parts[-3:-1]
      if taken.get(key, 0) < per_split[parts[-3]]:
        taken[key] = taken.get(key, 0) + 1
        member.name = '/'.join(parts[-3:])
        tar.extract(member, out, filter='data')
  return out


@pytest.fixture(scope='session')
def cifar10_dir(tmp_path_factory):
  """Path of the whole extracted real CIFAR-10 JPEG set (train/<class>/*.jpg, test/<class>/*.jpg)."""
  return _extract(tmp_path_factory, 'cifar10', {'train': 5000, 'test': 1000})


@pytest.fixture(scope='session')
def cifar10_small(tmp_path_factory):
  """A small class-balanced subset of the real CIFAR-10 JPEGs: train 200/class, test 100/class."""
  return _extract(tmp_path_factory, 'cifar10_small', {'train': 200, 'test': 100})


# The longest test files first, the longest at the top (CPU-seconds on the 2-core machine, with
# their module fixtures): pytest-xdist's loadfile gives each worker whole files in this order
# (pytest.ini: --no-loadscope-reorder), so that the last file to start is a short one and both
# workers end together (longest-first scheduling). Files not listed follow in collection order.
LONGEST_FIRST = (
    'test_pipeline.py',         # ~450 s: SIGKILL + rerun, threshold restart, controls
    'test_recipes.py',          # ~350 s: every recipe end to end, reduced
    'test_beam.py',             # ~300 s: shard vs Beam labeling of 5,000 JPEGs, a killed run
    'test_deterministic.py',    # ~240 s: the loop twice with --deterministic
    'test_train.py',            # ~200 s: CIFAR-10 training to above chance, resume after SIGKILL
    'test_data_order.py',       # ~150 s: 50,000 class-ordered images
    'test_models.py',           # ~150 s
    'test_gpu_benchmark.py',
    'test_train_distributed.py',
    'test_export.py',
    'test_fixres.py',
    'test_convert.py',
    'test_label.py',
    'test_image_limits.py',
)


def pytest_collection_modifyitems(session, config, items):
  """Orders the collected tests file by file as LONGEST_FIRST says (stable otherwise)."""
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# NS_TEST_CPU_LOG=FILE appends one JSON line per test to FILE: its node id, wall seconds and the
# CPU seconds of its setup, call and teardown (this process's and its waited-for children's), so
# that the suite's cost is found by file in CPU time, which another job on the machine inflates
# much less than wall time.  tools/test_cpu_table.py sums them by file.
_CPU_LOG = os.environ.get('NS_TEST_CPU_LOG')


def _cpu_seconds():
  import resource  # pylint: disable=g-import-not-at-top
  own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if _CPU_LOG:
  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(item, nextitem):
    """Times one test's setup, call and teardown in CPU and wall seconds (NS_TEST_CPU_LOG)."""
    import json  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    cpu, wall = _cpu_seconds(), time.time()
    yield
    with open(_CPU_LOG, 'a') as log:
      log.write(json.dumps({'test': item.nodeid, 'wall': round(time.time() - wall, 3),
                            'cpu': round(_cpu_seconds() - cpu, 3)}) + '\n')
