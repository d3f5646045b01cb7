"""Model dir -> TF1 checkpoint with the official EfficientNet variable names.

The reverse of `to_model_dir`: final/raw.weights.h5 becomes the plain variables and
final/ema.weights.h5 their `/ExponentialMovingAverage` shadows, plus `global_step`, so that the
official `eval_ckpt_main.py` (which restores the shadows) and other TF1 tools read our models.
"""

import os

import numpy as np
from absl import logging

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.convert import names, writer


def export_official(model_dir, prefix, *, scope=None, global_step=None, overwrite=False,
                    chunk_bytes=writer.DEFAULT_CHUNK_BYTES):
  """Writes the model dir's weights as a TF1 checkpoint with official names at `prefix`.

  model_dir: a complete model dir (config.json, final/ema and final/raw weights).
  prefix: the checkpoint prefix to write, e.g. OUT/model.ckpt (PREFIX.index, PREFIX.data-*, and
    OUT/checkpoint).  scope: the top-level scope (default the official one, e.g. efficientnet-b0).
  global_step: the int64 value of the `global_step` variable written alongside (default the
    step recorded in config.json's training metadata, else 0).
  Returns {'prefix', 'num_tensors', 'bytes', 'scope'}.  Raises FileNotFoundError for an incomplete
  model dir and ValueError when PREFIX exists and overwrite is False (checked before any work).
  """
  config = model_dir_lib.read_config(model_dir)
  for which in ('raw', 'ema'):
    path = model_dir_lib.weights_path(model_dir, which)
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} not found: {model_dir!r} is not a complete model dir')
  if os.path.exists(os.fspath(prefix) + '.index') and not overwrite:
    raise ValueError(f'checkpoint {os.fspath(prefix)!r} exists; pass overwrite to replace it')
  if global_step is None:
    step = config.training.get('global_step', 0)
    global_step = step if isinstance(step, int) else 0
  scope = names.official_scope(config.model) if scope is None else scope
  layout = names.official_layout(config.model, scope)
  keras_model = model_dir_lib.build(config)
  variables = {v.path: v for v in keras_model.weights}

  def items():
    for which, suffix in (('raw', ''), ('ema', names.EMA_SUFFIX)):
      keras_model.load_weights(model_dir_lib.weights_path(model_dir, which))
      for w in layout:
        yield w.official_name + suffix, np.asarray(variables[w.keras_path].numpy(), np.float32)
    yield 'global_step', np.asarray(global_step, np.int64)

  out = writer.write_checkpoint(prefix, items(), chunk_bytes=chunk_bytes, overwrite=overwrite)
  out['scope'] = scope
  logging.info('Wrote %d tensors (%.1f MB) to %s', out['num_tensors'], out['bytes'] / 2**20,
               out['prefix'])
  return out
