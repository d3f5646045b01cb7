"""Writes a TF1 (V2-format) checkpoint from (name, array) pairs, streaming in chunks.

Each chunk is saved with the SaveV2 op as its own shard and the shards are merged with
MergeV2Checkpoints, the way a sharded `tf.compat.v1.train.Saver` does, so memory holds one chunk at
a time.  The files are written under a temporary prefix and renamed when whole (data shards
first, the index last), and a `checkpoint` state file points at the result, so
`tf.train.latest_checkpoint(folder)` and the official `eval_ckpt_main.py --ckpt_dir` find it.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib

DEFAULT_CHUNK_BYTES = 256 << 20


def write_checkpoint(prefix, items, *, chunk_bytes=DEFAULT_CHUNK_BYTES, overwrite=False):
  """Writes the (name, numpy array) pairs of the iterable `items` as the checkpoint `prefix`.

  Returns {'prefix': prefix, 'num_tensors': n, 'bytes': total tensor bytes}.  Raises ValueError for
  a duplicate name, or when PREFIX.index exists and overwrite is False.
  """
  prefix = os.path.abspath(os.fspath(prefix))
  folder, base = os.path.split(prefix)
  if os.path.exists(prefix + '.index') and not overwrite:
    raise ValueError(f'checkpoint {prefix!r} exists; pass overwrite to replace it')
  os.makedirs(folder, exist_ok=True)
  work = tempfile.mkdtemp(dir=folder, prefix=f'.{base}.tmp-')
  try:
    parts, names, chunk, size = [], set(), [], 0
    total = 0

    def flush():
      part = os.path.join(work, f'part-{len(parts):05d}')
      tf.raw_ops.SaveV2(prefix=part, tensor_names=[n for n, _ in chunk],
                        shape_and_slices=[''] * len(chunk), tensors=[v for _, v in chunk])
      parts.append(part)
      chunk.clear()

    for name, value in items:
      if name in names:
        raise ValueError(f'duplicate checkpoint variable {name!r}')
      names.add(name)
      value = np.asarray(value)
      chunk.append((name, value))
      size += value.nbytes
      total += value.nbytes
      if size >= chunk_bytes:
        flush()
        size = 0
    if chunk or not parts:
      flush()
    merged = os.path.join(work, 'merged')
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=merged,
                                  delete_old_dirs=False)
    produced = sorted(f for f in os.listdir(work) if f.startswith('merged.data-'))
    for f in os.listdir(folder):  # shards of an overwritten checkpoint with another shard count
      if f.startswith(base + '.data-') and overwrite:
        os.remove(os.path.join(folder, f))
    for f in produced:
      os.replace(os.path.join(work, f), os.path.join(folder, base + f[len('merged'):]))
    os.replace(merged + '.index', prefix + '.index')
  finally:
    shutil.rmtree(work, ignore_errors=True)
  model_dir_lib.atomic_write_text(
      os.path.join(folder, 'checkpoint'),
      f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
  return {'prefix': prefix, 'num_tensors': len(names), 'bytes': total}
