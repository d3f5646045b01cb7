"""ns-filter: threshold, per-class top-K with duplication, balanced shards, the streaming selection
against the old candidate pool, bad input."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.selftrain import class_selection
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


# The reference: ns-filter's selection before the histograms, verbatim from
# noisy_student_tf/selftrain/filter.py at 16e599d (a candidate pool of (class, confidence,
# position) pruned to the top K per class by a lexsort, then the copies per class), kept frozen
# here so that the streaming selection is compared with the previous algorithm, not with itself.
def _top_k_per_class(labels, conf, pos, k):
  """Returns the index array of the entries that are among the k most confident of their class
  (ties broken by earlier position)."""
  order = np.lexsort((pos, -conf, labels))
  sorted_labels = labels[order]
  starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
  group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
  rank = np.arange(len(order)) - group_start
  return order[rank < k]


class _TopKPool:
  """Candidates (label, confidence, position) pruned to the top K per class; the pool never holds
  more than max(2 x classes x K, 1) entries plus one batch."""

  def __init__(self, k, num_classes_hint):
    self.k = k
    self.classes_seen = max(1, num_classes_hint or 1)
    self.parts = []
    self.size = 0
    self.peak = 0

  def add(self, labels, conf, pos):
    self.parts.append((labels, conf, pos))
    self.size += len(labels)
    self.peak = max(self.peak, self.size)
    if len(labels):
      self.classes_seen = max(self.classes_seen, int(labels.max()) + 1)
    if self.size > 2 * self.classes_seen * self.k:
      self._prune()

  def _prune(self):
    labels, conf, pos = (np.concatenate(x) for x in zip(*self.parts))
    keep = _top_k_per_class(labels, conf, pos, self.k)
    self.parts = [(labels[keep], conf[keep], pos[keep])]
    self.size = len(keep)

  def result(self):
    """Returns (labels, confidence, positions) of the final top K per class."""
    if not self.parts:
      return (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
    self._prune()
    return self.parts[0]


def passes_threshold(confidence, threshold):
  """True (bool array) where `confidence` (float32 values) is >= `threshold`, compared in float32
  as pass 1 and pass 2 compare them."""
  return np.asarray(confidence, np.float32) >= threshold


def class_copies(count, k, duplicate, seed, class_index):
  """Copies (int64 [count]) of the `count` kept records of class `class_index`, in position
  order, so that the class has exactly k (duplicate=True; the k % count extra copies go to
  records drawn with the seed (seed, class_index)) or keeps its records once (duplicate=False).
  Depends on nothing outside the class, so classes can be balanced independently."""
  if not duplicate:
    return np.ones(count, np.int64)
  copies = np.full(count, k // count, np.int64)
  extra = k % count
  if extra:
    rng = np.random.default_rng((int(seed), int(class_index)))
    copies[rng.choice(count, size=extra, replace=False)] += 1
  return copies


def _copies_per_record(labels, k, duplicate, seed):
  """Returns int64 copies for each kept record (labels in position order) so that every class
  present has exactly k (duplicate=True) or keeps its records once (duplicate=False)."""
  copies = np.ones(len(labels), np.int64)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    copies[idx] = class_copies(len(idx), k, duplicate, seed, c)
  return copies


def _pool_selection(labels, conf, threshold, k, duplicate, seed, batch=8192, num_classes=None):
  """The previous ns-filter's selection, driven as its filter_records drove it (pass 1 over
  batches, then the pool's result in position order and its copies).  Returns (positions
  ascending, copies)."""
  pool = _TopKPool(k, num_classes)
  for position in range(0, len(labels), batch):
    lab, cf = labels[position:position + batch], conf[position:position + batch]
    above = passes_threshold(cf, threshold)
    pos = np.arange(position, position + len(lab), dtype=np.int64)
    pool.add(lab[above], cf[above], pos[above])
  sel_labels, _, sel_pos = pool.result()
  order = np.argsort(sel_pos)
  sel_labels, sel_pos = sel_labels[order], sel_pos[order]
  return sel_pos, _copies_per_record(sel_labels, k, duplicate, seed)


def _streaming_selection(labels, conf, threshold, k, duplicate, seed, num_classes, batch=8192):
  """ns-filter's selection (class_selection) over numpy batches, as filter_records drives it.
  Returns (positions ascending, copies, the second look's peak entries)."""
  def batches():
    for at in range(0, len(labels), batch):
      yield labels[at:at + batch], conf[at:at + batch]

  histograms = class_selection.ClassHistograms(threshold, num_classes)
  for lab, cf in batches():
    histograms.add(lab, cf)
  plan, peak = class_selection.plan_selection(histograms, k, num_classes, batches)
  selector = class_selection.Selector(plan, duplicate, seed)
  positions, copies = [], []
  for at, (lab, cf) in zip(range(0, len(labels), batch), batches()):
    idx, n = selector.select(lab, cf)
    positions.append(idx + at)
    copies.append(n)
  return np.concatenate(positions), np.concatenate(copies), peak


def _tied_records(n, classes, rng):
  """n (labels, float32 confidences) over `classes` skewed classes: many exact ties (confidences
  on a 0.01 grid, a block at exactly 1.0 and at the 0.3 threshold) and runs of neighbouring
  float32 values (one ulp apart) that share a histogram bin."""
  weights = 1.0 / np.arange(1, classes + 1) ** 1.5
  labels = rng.choice(classes, size=n, p=weights / weights.sum()).astype(np.int64)
  conf = np.round(rng.random(n), 2).astype(np.float32)
  conf[rng.random(n) < 0.05] = 1.0
  conf[rng.random(n) < 0.05] = 0.3
  ulps = rng.random(n) < 0.3
  conf[ulps] = np.float32(0.85) + rng.integers(0, 60, ulps.sum()) * np.spacing(np.float32(0.85))
  return labels, conf


@pytest.mark.parametrize('k,duplicate,seed', [(3000, True, 0), (3000, False, 0), (1200, True, 5)])
def test_streaming_selection_is_the_pools_on_200k_tied_records(k, duplicate, seed):
  labels, conf = _tied_records(200_000, 25, np.random.default_rng(7))
  above = np.bincount(labels[conf >= np.float32(0.3)], minlength=25)
  assert (above > k).sum() >= 5 and (above < k).sum() >= 5  # several cut, several duplicated
  want_pos, want_copies = _pool_selection(labels, conf, 0.3, k, duplicate, seed)
  got_pos, got_copies, peak = _streaming_selection(labels, conf, 0.3, k, duplicate, seed, 25)
  np.testing.assert_array_equal(got_pos, want_pos)
  np.testing.assert_array_equal(got_copies, want_copies)
  assert 0 < peak < np.sum(above[above > k])  # entries of the second look, not records


@pytest.mark.parametrize('case', ['threshold 0, signed zeros', 'one value', 'cut between bins'])
def test_streaming_selection_edge_cases(case):
  rng = np.random.default_rng(3)
  n, classes, k = 20_000, 4, 1500
  labels = rng.integers(0, classes, n)
  if case == 'threshold 0, signed zeros':  # -0.0 passes 0.0 and ties with 0.0; -1e-45 does not
    conf = rng.choice(np.float32([0.0, -0.0, -1e-45, 1e-45, 0.5, 1.0]), n)
    threshold = 0.0
  elif case == 'one value':  # every candidate ties: the first k positions of each class
    conf = np.full(n, 0.7, np.float32)
    threshold = 0.3
  else:  # one class's k-th record ends a bin exactly, with no second look needed for it
    conf = np.where(np.arange(n) % 2, np.float32(0.9), np.float32(0.4))
    labels = np.zeros(n, np.int64)
    k = n // 2
    threshold = 0.3
  want = _pool_selection(labels, conf, threshold, k, True, 1)
  got = _streaming_selection(labels, conf, threshold, k, True, 1, classes, batch=777)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  if case == 'cut between bins':
    assert got[2] == 0


def test_second_look_holds_distinct_confidences_not_records(monkeypatch):
  monkeypatch.setattr(class_selection.CutBinLook, 'COMPACT_AT', 500)
  rng = np.random.default_rng(4)
  n, k = 200_000, 50_000
  labels = rng.integers(0, 2, n)
  conf = np.float32(0.85) + rng.integers(0, 40, n) * np.spacing(np.float32(0.85))
  got = _streaming_selection(labels, conf, 0.3, k, True, 0, 2, batch=1000)
  want = _pool_selection(labels, conf, 0.3, k, True, 0)
  np.testing.assert_array_equal(got[0], want[0])
  assert got[2] < 2 * 500 + 2 * 40  # ~100,000 records per cut bin, 40 distinct values each


def test_records_end_to_end_match_the_pool_selection(tmp_path):
  rng = np.random.default_rng(1)
  n, classes, k = 3000, 10, 150
  labels, conf = _tied_records(n, classes, rng)
  rows = [(f'id{i:05d}', int(labels[i]), float(conf[i])) for i in range(n)]
  inp = write_records(tmp_path / 'pseudo', rows, num_classes=classes, num_files=3)
  stats = filter_lib.filter_records(filter_lib.FilterConfig(
      input=str(inp), output_dir=str(tmp_path / 'out'), threshold=0.3, per_class=k,
      num_shards=4, seed=2, read_batch=50))
  out = read_output(tmp_path / 'out')
  got = collections.Counter(r[0] for shard in out.values() for r in shard)
  # The records' reading order: files sorted, records in file order (write_records deals rows).
  order = np.concatenate([np.arange(f, n, 3) for f in range(3)])
  pos, copies = _pool_selection(labels[order], conf[order], 0.3, k, True, 2, batch=50)
  assert got == {rows[order[p]][0]: int(c) for p, c in zip(pos, copies)}
  above = np.bincount(labels[conf >= np.float32(0.3)], minlength=classes)
  assert min(above) < k < max(above)
  assert stats['class_counts_output'] == [k] * classes
  assert sorted(len(v) for v in out.values()) == [k * classes // 4] * 4
  assert stats['shard_sizes'] == [k * classes // 4] * 4
  assert 0 < stats['candidate_pool_peak'] < classes * 100


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
