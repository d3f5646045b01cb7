"""Shard naming, input listing and small statistics shared by ns-label and ns-filter.

Shards are named `<prefix>-<shard>-of-<num_shards>.tfrecord` (DESIGN.md); a shard being written
lives under `<name>.tmp` and is renamed when whole, so a glob on `*.tfrecord` never sees half a
shard.
"""

import glob
import json
import os
import re

import numpy as np

from noisy_student_tf import model_dir as model_dir_lib

TMP_SUFFIX = '.tmp'
STATS_FILE = 'stats.json'
# Confidence histograms use the official filter's bins: 0.00, 0.01, ..., 1.00.
NUM_CONFIDENCE_BINS = 100
_SHARD_RE = re.compile(r'^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<num>\d{5})\.tfrecord$')


def shard_name(prefix, index, num_shards):
  """Returns the file name of shard `index` of `num_shards` (e.g. 'pseudo-00003-of-00008.tfrecord')."""
  return f'{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord'


def parse_shard_name(name):
  """Returns (prefix, index, num_shards) for a shard file name, or None when it is not one."""
  m = _SHARD_RE.match(os.path.basename(name))
  if not m:
    return None
  return m.group('prefix'), int(m.group('index')), int(m.group('num'))


def list_record_files(spec):
  """Returns the sorted record files named by `spec`: a folder (its *.tfrecord files), a glob, or
  a `pseudo:GLOB` source spec.  Raises ValueError when nothing matches."""
  if spec.startswith('pseudo:'):
    spec = spec[len('pseudo:'):]
  pattern = os.path.join(spec, '*.tfrecord') if os.path.isdir(spec) else spec
  files = sorted(f for f in glob.glob(pattern) if not f.endswith(TMP_SUFFIX))
  if not files:
    raise ValueError(f'no pseudo-label record files match {spec!r} (expected a folder written by '
                     'ns-label, or a glob such as DIR/*.tfrecord)')
  return files


def confidence_histogram(confidence, num_bins=NUM_CONFIDENCE_BINS, weights=None):
  """Returns the counts (np.int64 [num_bins]) of `confidence` values in equal bins over [0, 1]."""
  counts, _ = np.histogram(np.clip(confidence, 0.0, 1.0), bins=num_bins, range=(0.0, 1.0),
                           weights=weights)
  return counts.astype(np.int64)


def bin_edges(num_bins=NUM_CONFIDENCE_BINS):
  """Returns the num_bins + 1 edges of the confidence histogram, rounded for JSON."""
  return [round(x, 6) for x in np.linspace(0.0, 1.0, num_bins + 1).tolist()]


def add_counts(total, counts):
  """Returns `total + counts` for int arrays of possibly different lengths (the longer wins)."""
  n = max(len(total), len(counts))
  out = np.zeros(n, np.int64)
  out[:len(total)] += total
  out[:len(counts)] += counts
  return out


def write_json(path, obj):
  """Writes `obj` as indented JSON to `path` through a temp file and a rename."""
  model_dir_lib.atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_json(path):
  """Returns the JSON object in `path`, or None when the file does not exist."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def remove_if_exists(path):
  """Removes `path` when it exists."""
  if os.path.exists(path):
    os.remove(path)
