"""noisy-student-tf: Noisy Student self-training (Xie et al., 2019) with EfficientNet in Keras 3.

The Python API beside the binaries, for notebooks:

  import noisy_student_tf as ns
  clf = ns.load('/work/gen1')                 # model dir -> Classifier (see classifier.py)
  clf.predict(['cat.jpg', png_bytes, array])  # -> Prediction: indices, names, probabilities
  clf.top_k('cat.jpg', k=5)                   # -> (indices, probabilities, names)
  ns.train(ns.TrainConfig(...))               # what ns-train does   (train.trainer.train)
  ns.run_pipeline(ns.PipelineConfig(...))     # what ns-pipeline does (selftrain.pipeline)

The names above are imported on first use (PEP 562 `__getattr__`): `import noisy_student_tf`
imports nothing else, so `noisy_student_tf.models` stays TensorFlow-free (any Keras backend).

`noisy_student_tf.train` is both the training subpackage (noisy_student_tf.train.trainer, .optim,
...) and, called, `noisy_student_tf.train.trainer.train`: the subpackage module is given a
`__call__` when it is attached to this package, so the two meanings never shadow each other.
"""

import importlib as _importlib
import sys as _sys
import types as _types

__version__ = '0.1.0'

# Public name -> (module, attribute), imported when first read.
_LAZY = {
    'load': ('noisy_student_tf.classifier', 'load'),
    'Classifier': ('noisy_student_tf.classifier', 'Classifier'),
    'Prediction': ('noisy_student_tf.classifier', 'Prediction'),
    'run_pipeline': ('noisy_student_tf.selftrain.pipeline', 'run_pipeline'),
    'PipelineConfig': ('noisy_student_tf.selftrain.pipeline', 'PipelineConfig'),
    'TrainConfig': ('noisy_student_tf.train.trainer', 'TrainConfig'),
    'LabelConfig': ('noisy_student_tf.selftrain.label', 'LabelConfig'),
    'FilterConfig': ('noisy_student_tf.selftrain.filter', 'FilterConfig'),
}
_TRAIN = 'train'  # the subpackage, made callable (see the module docstring)

__all__ = sorted([*_LAZY, _TRAIN])


def __getattr__(name):
  """Imports and returns the public name `name` on first use (PEP 562); AttributeError for
  anything else."""
  if name == _TRAIN:
    # Importing the subpackage attaches it here through _Package.__setattr__ (made callable).
    return _importlib.import_module(f'{__name__}.{_TRAIN}')
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, attribute = _LAZY[name]
  value = getattr(_importlib.import_module(module), attribute)
  globals()[name] = value  # later reads skip __getattr__
  return value


def __dir__():
  """The module's public names, the lazy ones included (without importing them)."""
  return sorted({*(n for n in globals() if not n.startswith('_') or n.endswith('__')), *__all__})


class _CallableTrainPackage(_types.ModuleType):
  """The class given to the noisy_student_tf.train subpackage: a module that can be called."""

  def __call__(self, config):
    """noisy_student_tf.train(config) = noisy_student_tf.train.trainer.train(config).

    Trains the model the TrainConfig `config` describes and writes a complete model dir
    (resuming from its latest checkpoint).  Returns the result dict of trainer.train ('step',
    'loss', 'accuracy', ... and 'top1', 'top5' when eval_data is set).  Raises ValueError for bad
    settings before the first step.
    """
    return _importlib.import_module(f'{self.__name__}.trainer').train(config)


class _Package(_types.ModuleType):
  """This package's module class: makes the `train` subpackage callable when it is attached."""

  def __setattr__(self, name, value):
    # Only a plain module: a module that already has its own class is left as it is.
    plain = type(value) is _types.ModuleType  # pylint: disable=unidiomatic-typecheck
    if name == _TRAIN and plain and value.__name__ == f'{self.__name__}.{_TRAIN}':
      value.__class__ = _CallableTrainPackage
    super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
