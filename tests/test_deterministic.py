"""--deterministic: the same ns-pipeline command twice gives the same pseudo-labels, weights and
report figures (the student with RandAugment, dropout and stochastic depth included)."""

import json
import subprocess
import sys

import h5py
import numpy as np

from test_label import read_records  # pylint: disable=g-bad-import-order
from test_pipeline import TINY_ARGS  # pylint: disable=g-bad-import-order


def _run(work_dir):
  # TINY_ARGS made shorter still: two runs of the whole loop are what this test costs.
  cmd = [sys.executable, '-m', 'noisy_student_tf.cli.pipeline', f'--work_dir={work_dir}',
         *TINY_ARGS, '--deterministic', '--student.dropout=0.3', '--student.drop_path_rate=0.2',
         '--teacher.train_steps=6', '--student.train_steps=6', '--label.num_shards=1',
         '--filter.num_shards=1']
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads((work_dir / 'report.json').read_text())


def _weights(path):
  out = {}
  with h5py.File(path, 'r') as f:
    f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(
        obj, h5py.Dataset) else None)
  return out


def test_same_command_twice_gives_identical_results(tmp_path):
  first, second = _run(tmp_path / 'a'), _run(tmp_path / 'b')
  keys = ('generation', 'top1', 'top5', 'num_pseudo_labels', 'num_unique_pseudo_labels',
          'pseudo_label_accuracy')
  assert [{k: r[k] for k in keys} for r in first] == [{k: r[k] for k in keys} for r in second]
  for g in (0, 1):
    a = _weights(tmp_path / 'a' / f'gen{g}' / 'model' / 'final' / 'ema.weights.h5')
    b = _weights(tmp_path / 'b' / f'gen{g}' / 'model' / 'final' / 'ema.weights.h5')
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=f'gen{g} {name}')
  pseudo_a = sorted((r['source_id'], tuple(r['probabilities']))
                    for r in read_records(tmp_path / 'a' / 'gen0' / 'pseudo'))
  pseudo_b = sorted((r['source_id'], tuple(r['probabilities']))
                    for r in read_records(tmp_path / 'b' / 'gen0' / 'pseudo'))
  assert pseudo_a == pseudo_b
