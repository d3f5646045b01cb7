"""ns-filter at scale: 1,000,000 synthetic pseudo-label records over 1000 classes.

Writes the records (top-5 probabilities, a 64-byte stand-in image, a skewed class distribution
so that some classes are cut to K and others duplicated), then runs, each in its own process so
that its peak memory is its own:
  ours   the `ns-filter` binary (two streaming passes, pool bounded by classes x K);
  naive  the peer: every record read into memory, sorted per class, written out.
Prints a table: seconds, records per second, peak RSS (MB), and the ratios ours / naive.
Goal: ours stays under 1 GB whatever the record count.

  python benchmarks/filter_scale.py [--records=1000000] [--classes=1000] [--per_class=1000]
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP_K = 5
IMAGE_BYTES = 64
ID_WIDTH = 12


def _template(label, num_classes):
  """Returns (serialized Example bytes, offset of the confidence float, offset of the source id)
  for a record of class `label` whose confidence and source id are sentinel values."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sentinel_conf = 0.123456789
  sentinel_id = b'#' * ID_WIDTH
  indices = [label] + [(label + j) % num_classes for j in range(1, TOP_K)]
  feature = {
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'\x00' * IMAGE_BYTES])),
      'image/source_id': tf.train.Feature(bytes_list=tf.train.BytesList(value=[sentinel_id])),
      'pseudo/probabilities': tf.train.Feature(float_list=tf.train.FloatList(
          value=[0.6, 0.1, 0.1, 0.1, 0.1])),
      'pseudo/indices': tf.train.Feature(int64_list=tf.train.Int64List(value=indices)),
      'pseudo/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      'pseudo/confidence': tf.train.Feature(float_list=tf.train.FloatList(value=[sentinel_conf])),
      'pseudo/generation': tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
  }
  raw = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
  conf_at = raw.index(struct.pack('<f', sentinel_conf))
  id_at = raw.index(sentinel_id)
  return raw, conf_at, id_at


def write_synthetic(folder, num_records, num_classes, num_files, seed=0):
  """Writes `num_records` records into `num_files` shards; returns seconds taken."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.selftrain import shards  # pylint: disable=g-import-not-at-top
  start = time.time()
  rng = np.random.default_rng(seed)
  # Zipf-like class frequencies: the head classes overflow K, the tail ones need copies.
  weights = 1.0 / np.arange(1, num_classes + 1) ** 0.8
  labels = rng.choice(num_classes, size=num_records, p=weights / weights.sum())
  conf = rng.beta(2, 2, size=num_records).astype(np.float32)
  templates = [_template(c, num_classes) for c in range(num_classes)]
  os.makedirs(folder, exist_ok=True)
  per_file = -(-num_records // num_files)
  for f in range(num_files):
    path = os.path.join(folder, shards.shard_name('pseudo', f, num_files))
    with tf.io.TFRecordWriter(path) as w:
      for i in range(f * per_file, min(num_records, (f + 1) * per_file)):
        raw, conf_at, id_at = templates[labels[i]]
        w.write(b''.join((raw[:id_at], b'%012d' % i, raw[id_at + ID_WIDTH:conf_at],
                          struct.pack('<f', conf[i]), raw[conf_at + 4:])))
  shards.write_json(os.path.join(folder, shards.STATS_FILE), {'num_classes': num_classes})
  return time.time() - start


def naive_filter(input_dir, output_dir, threshold, per_class):
  """The peer: holds every record in memory, then sorts per class (what a simple script does)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(tf.io.gfile.glob(os.path.join(input_dir, '*.tfrecord')))
  features = {'pseudo/label': tf.io.FixedLenFeature([], tf.int64),
              'pseudo/confidence': tf.io.FixedLenFeature([], tf.float32)}
  records, labels, conf = [], [], []
  for batch in tf.data.TFRecordDataset(files).batch(8192).as_numpy_iterator():
    parsed = tf.io.parse_example(batch, features)
    records.extend(batch.tolist())
    labels.append(parsed['pseudo/label'].numpy())
    conf.append(parsed['pseudo/confidence'].numpy())
  labels, conf = np.concatenate(labels), np.concatenate(conf)
  os.makedirs(output_dir, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(output_dir, 'naive.tfrecord')) as w:
    for c in np.unique(labels):
      idx = np.flatnonzero((labels == c) & (conf >= threshold))
      idx = idx[np.argsort(-conf[idx], kind='stable')][:per_class]
      for j in range(per_class):
        w.write(records[idx[j % len(idx)]])


def _run_child(args):
  """Runs `args` in a child process; returns (seconds, that child's peak RSS in MB)."""
  start = time.time()
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.time() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f'{args[:3]} failed with status {status}')
  return seconds, usage.ru_maxrss / 1024.0


def main():
  """Parses arguments, writes the records, runs both filters, prints the table."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--records', type=int, default=1_000_000)
  p.add_argument('--classes', type=int, default=1000)
  p.add_argument('--per_class', type=int, default=1000)
  p.add_argument('--threshold', type=float, default=0.3)
  p.add_argument('--files', type=int, default=16)
  p.add_argument('--work_dir', default=None, help='default: a temporary folder, removed after')
  p.add_argument('--skip_naive', action='store_true')
  p.add_argument('--naive_child', nargs=2, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.naive_child:
    naive_filter(a.naive_child[0], a.naive_child[1], a.threshold, a.per_class)
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  tmp = tempfile.TemporaryDirectory() if a.work_dir is None else None
  work = a.work_dir or tmp.name
  inp = os.path.join(work, 'pseudo')
  write_s = write_synthetic(inp, a.records, a.classes, a.files)
  size_mb = sum(os.path.getsize(os.path.join(inp, f)) for f in os.listdir(inp)) / 2**20
  print(f'wrote {a.records} records, {a.classes} classes, {a.files} files, {size_mb:.0f} MB '
        f'in {write_s:.1f} s')
  ours_s, ours_mb = _run_child([
      sys.executable, '-m', 'noisy_student_tf.cli.filter', f'--input={inp}',
      f'--output_dir={os.path.join(work, "ours")}', f'--threshold={a.threshold}',
      f'--per_class={a.per_class}', '--num_shards=16'])
  with open(os.path.join(work, 'ours', 'stats.json')) as f:
    lib_s = json.load(f)['seconds']
  rows = [('ours (ns-filter, streaming)', ours_s, ours_mb)]
  if not a.skip_naive:
    naive_s, naive_mb = _run_child([sys.executable, __file__, f'--threshold={a.threshold}',
                                    f'--per_class={a.per_class}', '--naive_child', inp,
                                    os.path.join(work, 'naive')])
    rows.append(('naive peer (all in memory)', naive_s, naive_mb))
  print(f'\n| filter | seconds | records/s | peak RSS (MB) |\n|---|---|---|---|')
  for name, s, mb in rows:
    print(f'| {name} | {s:.1f} | {a.records / s:,.0f} | {mb:,.0f} |')
  if len(rows) == 2:
    print(f'| ratio ours/naive | {rows[0][1] / rows[1][1]:.2f} | {rows[1][1] / rows[0][1]:.2f} '
          f'| {rows[0][2] / rows[1][2]:.2f} |')
  print(f'\nours inside the library (both passes, without process start-up): {lib_s:.1f} s, '
        f'{a.records / lib_s:,.0f} records/s')
  print(f'ours under 1 GB: {"yes" if ours_mb < 1024 else "NO"} ({ours_mb:.0f} MB); '
        f'seconds include starting Python and TensorFlow')
  if tmp:
    tmp.cleanup()


if __name__ == '__main__':
  main()
