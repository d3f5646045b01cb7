"""ns-filter: threshold, per-class top-K with duplication, balanced shards, bounded pool, bad input."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import shards


def _example(source_id, label, confidence, num_classes):
  probs = np.full(num_classes, (1 - confidence) / max(num_classes - 1, 1), np.float32)
  probs[label] = confidence
  feature = {
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'img-' + source_id])),
      'image/source_id': tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_id])),
      'pseudo/probabilities': tf.train.Feature(float_list=tf.train.FloatList(value=probs)),
      'pseudo/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      'pseudo/confidence': tf.train.Feature(float_list=tf.train.FloatList(value=[confidence])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(folder, rows, num_classes, num_files=2):
  """Writes rows (source_id str, label, confidence) round-robin into `num_files` shards."""
  os.makedirs(folder, exist_ok=True)
  writers = [tf.io.TFRecordWriter(os.path.join(folder, shards.shard_name('pseudo', i, num_files)))
             for i in range(num_files)]
  for i, (sid, label, conf) in enumerate(rows):
    writers[i % num_files].write(_example(sid.encode(), label, conf, num_classes))
  for w in writers:
    w.close()
  return folder


def read_output(folder):
  """Returns {shard file: [(source_id, label, confidence), ...]} of ns-filter's output."""
  out = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(folder, 'balanced-*.tfrecord'))):
    rows = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      ex = tf.train.Example.FromString(raw)
      f = ex.features.feature
      rows.append((f['image/source_id'].bytes_list.value[0].decode(),
                   f['pseudo/label'].int64_list.value[0],
                   f['pseudo/confidence'].float_list.value[0]))
    out[os.path.basename(path)] = rows
  return out


# Hand-made: class 0 has 6 confident records (keep the top 4), class 1 two (each copied twice),
# class 2 three above the threshold and one below (3 kept, one of them copied twice), and records
# below 0.3 in every class.
HAND_ROWS = ([(f'c0-{i}', 0, c) for i, c in enumerate([0.9, 0.8, 0.35, 0.7, 0.5, 0.31])] +
             [('c1-0', 1, 0.6), ('c1-1', 1, 0.4), ('c1-low', 1, 0.29)] +
             [('c2-0', 2, 0.99), ('c2-1', 2, 0.3), ('c2-2', 2, 0.45), ('c2-low', 2, 0.1)])


def test_threshold_top_k_and_duplication(tmp_path):
  inp = write_records(tmp_path / 'pseudo', HAND_ROWS, num_classes=3)
  stats = filter_lib.filter_records(filter_lib.FilterConfig(
      input=str(inp), output_dir=str(tmp_path / 'out'), threshold=0.3, per_class=4, num_shards=3))
  out = read_output(tmp_path / 'out')
  rows = [r for shard in out.values() for r in shard]
  ids = collections.Counter(r[0] for r in rows)
  assert ids == {'c0-0': 1, 'c0-1': 1, 'c0-3': 1, 'c0-4': 1, 'c1-0': 2, 'c1-1': 2,
                 'c2-0': ids['c2-0'], 'c2-1': ids['c2-1'], 'c2-2': ids['c2-2']}
  assert sorted(ids[k] for k in ('c2-0', 'c2-1', 'c2-2')) == [1, 1, 2]  # 0.3 is kept (>=)
  assert collections.Counter(r[1] for r in rows) == {0: 4, 1: 4, 2: 4}
  # Balanced shards, and the two copies of one image in different shards.
  assert sorted(len(v) for v in out.values()) == [4, 4, 4]
  for sid in ('c1-0', 'c1-1'):
    assert sum(1 for shard in out.values() if any(r[0] == sid for r in shard)) == 2
  assert stats['class_counts_input'] == [6, 3, 4]
  assert stats['class_counts_above_threshold'] == [6, 2, 3]
  assert stats['class_counts_unique_kept'] == [4, 2, 3]
  assert stats['class_counts_output'] == [4, 4, 4]
  assert stats['num_input'] == 13 and stats['num_output'] == 12
  assert sum(stats['confidence_histogram']['input']) == 13
  assert sum(stats['confidence_histogram']['output']) == 12
  on_disk = json.loads((tmp_path / 'out' / 'stats.json').read_text())
  assert on_disk['class_counts_output'] == [4, 4, 4]
  assert (tmp_path / 'out' / 'plot.png').stat().st_size > 1000
  assert not list((tmp_path / 'out').glob('*.tmp'))
  assert filter_lib.is_complete(str(tmp_path / 'out'))


def test_without_balancing_keeps_each_confident_record_once(tmp_path):
  inp = write_records(tmp_path / 'pseudo', HAND_ROWS, num_classes=3)
  stats = filter_lib.filter_records(filter_lib.FilterConfig(
      input=str(inp), output_dir=str(tmp_path / 'out'), threshold=0.5, num_shards=2))
  rows = [r for shard in read_output(tmp_path / 'out').values() for r in shard]
  expected = sorted(sid for sid, _, c in HAND_ROWS if c >= 0.5)
  assert sorted(r[0] for r in rows) == expected
  assert stats['num_output'] == len(expected)


def test_pool_stays_bounded_and_matches_exact_selection(tmp_path):
  rng = np.random.default_rng(1)
  n, classes, k = 3000, 10, 40
  labels = rng.integers(0, classes, n)
  conf = rng.random(n).astype(np.float32)
  rows = [(f'id{i:05d}', int(labels[i]), float(conf[i])) for i in range(n)]
  inp = write_records(tmp_path / 'pseudo', rows, num_classes=classes, num_files=3)
  stats = filter_lib.filter_records(filter_lib.FilterConfig(
      input=str(inp), output_dir=str(tmp_path / 'out'), threshold=0.3, per_class=k,
      duplicate=False, num_shards=4, read_batch=50))
  got = sorted(r[0] for shard in read_output(tmp_path / 'out').values() for r in shard)
  # Reference: the k most confident above the threshold in each class.
  conf32 = np.asarray([r[2] for r in rows], np.float32)
  expected = []
  for c in range(classes):
    idx = [i for i in range(n) if labels[i] == c and conf32[i] >= 0.3]
    expected += [rows[i][0] for i in sorted(idx, key=lambda i: -conf32[i])[:k]]
  assert got == sorted(expected)
  assert stats['candidate_pool_peak'] <= 2 * classes * k + 50


@pytest.mark.parametrize('field,value,message', [
    ('threshold', 1.5, 'threshold must be in [0, 1]'),
    ('threshold', -0.1, 'threshold must be in [0, 1]'),
    ('per_class', 0, 'per_class (K) must be a positive integer'),
    ('per_class', -5, 'per_class (K) must be a positive integer'),
])
def test_bad_settings_fail_before_work(tmp_path, field, value, message):
  inp = write_records(tmp_path / 'pseudo', HAND_ROWS, num_classes=3)
  config = filter_lib.FilterConfig(input=str(inp), output_dir=str(tmp_path / 'out'),
                                   **{field: value})
  with pytest.raises(ValueError) as e:
    filter_lib.filter_records(config)
  assert message in str(e.value) and repr(value) in str(e.value)
  assert not (tmp_path / 'out').exists()


def test_empty_input_fails_clearly(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no pseudo-label record files match'):
    filter_lib.filter_records(filter_lib.FilterConfig(input=str(tmp_path / 'empty'),
                                                      output_dir=str(tmp_path / 'out')))


def test_binary_exits_non_zero_on_bad_threshold(tmp_path):
  inp = write_records(tmp_path / 'pseudo', HAND_ROWS, num_classes=3)
  proc = subprocess.run([sys.executable, '-m', 'noisy_student_tf.cli.filter', f'--input={inp}',
                         f'--output_dir={tmp_path / "out"}', '--threshold=2'],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert 'threshold must be in [0, 1], got 2.0' in proc.stderr
