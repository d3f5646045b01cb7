"""Opens a TF1 checkpoint (the V2 format `tf.compat.v1.train.Saver` writes: PREFIX.index plus
PREFIX.data-*) and reads its variable names, shapes, dtypes and values."""

import os

import numpy as np
import tensorflow as tf


class CheckpointError(ValueError):
  """A checkpoint that cannot be converted; the message names the file or the variable."""


def resolve_prefix(path):
  """Returns the checkpoint prefix for `path`: a prefix itself (PREFIX.index exists), a
  PREFIX.index / PREFIX.data-* file name, or a folder holding a `checkpoint` state file or exactly
  one *.index file (an extracted official tarball).  Raises CheckpointError saying what was found.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest and os.path.exists(latest + '.index'):
      return latest
    indexes = sorted(f[:-len('.index')] for f in os.listdir(path) if f.endswith('.index'))
    if len(indexes) == 1:
      return os.path.join(path, indexes[0])
    raise CheckpointError(
        f'checkpoint folder {path!r} has ' +
        (f'several checkpoints {indexes}; pass one prefix' if indexes else
         'no checkpoint (expected PREFIX.index and PREFIX.data-* files, e.g. model.ckpt.index)'))
  if path.endswith('.index'):
    path = path[:-len('.index')]
  elif '.data-' in os.path.basename(path):
    path = path[:path.rindex('.data-')]
  if not os.path.exists(path + '.index'):
    raise CheckpointError(f'checkpoint {path!r} not found: expected the file {path}.index '
                          '(pass the prefix, e.g. noisy_student_efficientnet-b0/model.ckpt)')
  return path


class CheckpointIndex:
  """The variables of one checkpoint: `shapes` {name: tuple}, `dtypes` {name: np.dtype}, and
  `read(name)` returning a numpy array.  Opening reads only the index, not the tensor data."""

  def __init__(self, path):
    self.prefix = resolve_prefix(path)
    try:
      self._reader = tf.train.load_checkpoint(self.prefix)
      shapes = self._reader.get_variable_to_shape_map()
      dtypes = self._reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as e:
      raise CheckpointError(f'cannot read checkpoint {self.prefix!r}: {_first_line(e)}') from e
    self.shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
    self.dtypes = {n: np.dtype(d.as_numpy_dtype) for n, d in dtypes.items()}

  def read(self, name):
    """Returns the value of variable `name` as a numpy array; raises CheckpointError naming the
    variable when its data cannot be read (e.g. a truncated .data file)."""
    try:
      value = self._reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
      raise CheckpointError(f'cannot read variable {name!r} from checkpoint {self.prefix!r} '
                            f'(truncated or corrupt file?): {_first_line(e)}') from e
    value = np.asarray(value)
    if value.shape != self.shapes[name]:
      raise CheckpointError(f'variable {name!r} in {self.prefix!r} read with shape {value.shape}, '
                            f'the index says {self.shapes[name]} (corrupt file?)')
    return value

  def data_bytes(self):
    """Returns the total size in bytes of the checkpoint's data files."""
    folder, base = os.path.split(self.prefix)
    folder = folder or '.'
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.startswith(base + '.data-'))


def _first_line(error):
  text = getattr(error, 'message', None) or str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__
