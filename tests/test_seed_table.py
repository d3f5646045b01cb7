"""tools/seed_table.py: per-seed rows from ns-pipeline work dirs, mean ± std, gains and their
standard error."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _work_dir(root, seed, teacher, student, control):
  work = root / f's{seed}'
  (work / 'gen1' / 'controls' / 'labeled_only').mkdir(parents=True)
  (work / 'pipeline_config.json').write_text(json.dumps({'split_seed': seed}))
  (work / 'report.json').write_text(json.dumps([{'generation': 0, 'top1': teacher},
                                                {'generation': 1, 'top1': student}]))
  (work / 'gen1' / 'controls' / 'labeled_only' / 'eval.json').write_text(
      json.dumps({'top1': control}))
  (work / 'stage_seconds.json').write_text(json.dumps(
      {'split': 5, 'gen0/train': 600, 'gen0/label': 30, 'gen0/filter': 30, 'gen1/train': 540,
       'gen1/controls/labeled_only': 900}))
  return work


def test_table_of_work_dirs_and_recorded_rows(tmp_path):
  dirs = [_work_dir(tmp_path, 1, 0.68, 0.74, 0.72), _work_dir(tmp_path, 2, 0.69, 0.73, 0.725)]
  recorded = tmp_path / 'recorded.json'
  recorded.write_text(json.dumps([{'split_seed': 0, 'teacher': 0.70, 'labeled_only': 0.73,
                                   'student': 0.75, 'note': 'earlier run'}]))
  out = tmp_path / 'table'
  proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'seed_table.py'),
                         f'--work_dirs={",".join(map(str, dirs))}', f'--recorded={recorded}',
                         f'--output={out}'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(out.with_suffix('.json').read_text())
  assert [r['split_seed'] for r in summary['rows']] == [0, 1, 2]
  assert summary['columns'] == ['teacher', 'labeled_only', 'student']
  assert summary['rows'][1]['minutes'] == pytest.approx(20.0)  # controls not counted
  gains = [0.02, 0.02, 0.005]
  gain = summary['gains']['labeled_only']
  assert gain['per_seed'] == pytest.approx(gains)
  mean = sum(gains) / 3
  std = math.sqrt(sum((g - mean) ** 2 for g in gains) / 2)
  assert gain['mean'] == pytest.approx(mean) and gain['std'] == pytest.approx(std)
  assert gain['standard_error'] == pytest.approx(std / math.sqrt(3))
  assert gain['above_twice_the_error'] is (mean > 2 * std / math.sqrt(3))
  assert summary['mean']['student'] == pytest.approx((0.75 + 0.74 + 0.73) / 3)
  table = out.with_suffix('.md').read_text()
  assert '| 0 | 70.00 | 73.00 | 75.00 | +5.00 | +2.00 | earlier run |' in table
  assert '**mean ± std** | 69.00 ± 1.00' in table
  assert 'student - labeled_only: +1.50 points' in table


def test_a_work_dir_without_student_is_refused(tmp_path):
  work = _work_dir(tmp_path, 1, 0.68, 0.74, 0.72)
  (work / 'report.json').write_text(json.dumps([{'generation': 0, 'top1': 0.68}]))
  proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'seed_table.py'),
                         f'--work_dirs={work}', f'--output={tmp_path / "t"}'],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and 'has no student (generation 1)' in proc.stderr
