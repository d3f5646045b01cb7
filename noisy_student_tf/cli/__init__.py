"""The ns-* binaries (absl apps, one module each).

Importing this package makes the process's first `import tensorflow` or `import keras` skip the
optional modules they load eagerly for features no binary uses: jax (tf.lite's authoring API,
Keras' Orbax checkpoint callback), scikit-learn (Keras' scikit-learn wrappers) and matplotlib
(Keras' image-gallery plot).  Each is made unimportable only while those packages execute,
so a later `import sklearn` or `import matplotlib.pyplot` (the digits source, the report plots)
loads it as usual.  Importing noisy_student_tf.cli.pipeline took 5.55 CPU-seconds before and
3.01 after (tests start dozens of binaries).
Nothing changes when TensorFlow is already imported, or when Keras runs on another backend.
"""

import importlib.machinery
import os
import sys

_OPTIONAL_EXTRAS = ('jax', 'sklearn', 'matplotlib')


_HEAVY = ('tensorflow', 'keras')


class _LeanTensorFlowImport:
  """A meta path finder that finds `tensorflow` and `keras` with those extras blocked while
  their packages run (then removes itself)."""

  def __init__(self):
    self._pending = set(_HEAVY)

  def find_spec(self, name, path=None, target=None):
    """The normal spec of `tensorflow` or `keras` with its loader's exec_module wrapped; None
    for anything else (the next finders decide)."""
    if name not in self._pending:
      return None
    self._pending.discard(name)
    if not self._pending:
      sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      return spec
    execute = spec.loader.exec_module

    def exec_module(module):
      blocked = [m for m in _OPTIONAL_EXTRAS if m not in sys.modules]
      for m in blocked:
        sys.modules[m] = None  # `import m` raises ImportError, which they catch
      try:
        execute(module)
      finally:
        for m in blocked:
          if m in sys.modules and sys.modules[m] is None:
            del sys.modules[m]

    spec.loader.exec_module = exec_module
    return spec


if (not any(m in sys.modules for m in _HEAVY) and
    os.environ.get('KERAS_BACKEND', 'tensorflow') == 'tensorflow' and
    not any(isinstance(f, _LeanTensorFlowImport) for f in sys.meta_path)):
  sys.meta_path.insert(0, _LeanTensorFlowImport())
