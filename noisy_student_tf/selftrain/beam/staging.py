"""Whole-or-nothing output of the Beam runners.

A Beam run writes its shards into OUTPUT_DIR/.beam-staging/ (Beam's WriteToTFRecord keeps its own
temporary files inside it); only when the pipeline has finished are the shards moved into
OUTPUT_DIR, and the caller writes stats.json last.  `begin` clears whatever a killed run left
(staging folder, shards moved before the kill, the summary files), so a rerun after a kill
starts clean: OUTPUT_DIR never holds a partial or a duplicated shard set under a final name
once stats.json (the completion marker) is there, and a glob on OUTPUT_DIR/*.tfrecord never
sees the staging folder's files.
"""

import glob
import os
import shutil

from noisy_student_tf.selftrain import shards

STAGING_DIR = '.beam-staging'
SHARD_TEMPLATE = '-SSSSS-of-NNNNN'  # Beam's spelling of shards.shard_name's
SUFFIX = '.tfrecord'


def staging_dir(output_dir):
  """OUTPUT_DIR/.beam-staging: where a Beam run writes before its output is moved into place."""
  return os.path.join(output_dir, STAGING_DIR)


def begin(output_dir, prefix, stale=()):
  """Clears what an earlier, unfinished run left in `output_dir` (the staging folder, shards
  `prefix-*.tfrecord*`, stats.json, plot.png and the names in `stale`) and returns a fresh, empty
  staging folder."""
  os.makedirs(output_dir, exist_ok=True)
  for name in (shards.STATS_FILE, 'plot.png') + tuple(stale):
    path = os.path.join(output_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      shards.remove_if_exists(path)
  for path in glob.glob(os.path.join(output_dir, f'{prefix}-*{SUFFIX}*')):
    os.remove(path)
  staging = staging_dir(output_dir)
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  return staging


def write_prefix(staging, prefix):
  """The file_path_prefix to give WriteToTFRecord (with SHARD_TEMPLATE and SUFFIX) so that its
  shards are named as shards.shard_name names them."""
  return os.path.join(staging, prefix)


def publish(output_dir, prefix, num_shards):
  """Moves the `num_shards` shards of a finished run from the staging folder into `output_dir`
  (an empty file for a shard Beam did not write) and removes the staging folder.  Returns the
  shard names in order."""
  staging = staging_dir(output_dir)
  names = [shards.shard_name(prefix, i, num_shards) for i in range(num_shards)]
  for name in names:
    staged = os.path.join(staging, name)
    if not os.path.exists(staged):
      open(staged, 'wb').close()  # an empty TFRecord file: a shard that got no record
    os.replace(staged, os.path.join(output_dir, name))
  shutil.rmtree(staging)
  return names
