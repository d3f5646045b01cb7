"""The teacher / control / student table of one recipe over split seeds, with mean and std.

Reads ns-pipeline work dirs (W/pipeline_config.json, W/report.json, W/gen1/controls/<name>/
eval.json, W/stage_seconds.json) and, optionally, rows recorded from earlier runs (a JSON list of
{"split_seed", "teacher", "student", "labeled_only", ... , "note"}: top-1 fractions), and writes
OUTPUT.json and OUTPUT.md: one row per seed, the mean and sample standard deviation of every
column, and the student's gain over each control with its standard error across seeds
(std / sqrt(n)): the gain is shown when it is larger than twice that error.

  python tools/seed_table.py --work_dirs=/tmp/ns-s1,/tmp/ns-s2 --recorded=results/s0.json \\
      --output=results/cifar10_4000_seeds
"""

import json
import math
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list('work_dirs', [], 'ns-pipeline work dirs, one per split seed.')
flags.DEFINE_string('recorded', None, 'Optional JSON list of rows measured in earlier runs '
                    '(split_seed, teacher, student, control top-1 fractions, note).')
flags.DEFINE_string('output', 'seed_table', 'Output path without extension (.json and .md).')
flags.DEFINE_string('title', 'CIFAR-10-4000 over split seeds', 'Heading of the markdown table.')

CONTROLS = ('labeled_only', 'no_noise')
# The stages of W/stage_seconds.json a seed's budget counts: the teacher and one student.
BUDGET_STAGES = ('gen0/train', 'gen0/label', 'gen0/filter', 'gen1/train')


def _read(path):
  with open(path) as f:
    return json.load(f)


def work_dir_row(work_dir):
  """{'split_seed', 'teacher', 'student', <control>..., 'minutes', 'source'} of one work dir
  (top-1 fractions; minutes: teacher + labeling + filter + student, controls excluded)."""
  config = _read(os.path.join(work_dir, 'pipeline_config.json'))
  report = {r['generation']: r for r in _read(os.path.join(work_dir, 'report.json'))}
  if 1 not in report:
    raise ValueError(f'{work_dir}: report.json has no student (generation 1): {sorted(report)}')
  row = {'split_seed': config['split_seed'], 'teacher': report[0]['top1'],
         'student': report[1]['top1'], 'source': work_dir}
  for name in CONTROLS:
    path = os.path.join(work_dir, 'gen1', 'controls', name, 'eval.json')
    if os.path.exists(path):
      row[name] = _read(path)['top1']
  stages_path = os.path.join(work_dir, 'stage_seconds.json')
  if os.path.exists(stages_path):
    stages = _read(stages_path)
    row['minutes'] = sum(stages.get(k, 0) for k in BUDGET_STAGES) / 60
  return row


def mean_std(values):
  """(mean, sample standard deviation; None for one value) of a list of floats."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarise(rows):
  """{'rows', 'columns', 'mean', 'std', 'gains'} of the per-seed rows: gains over the teacher
  and each control present in every row, with mean, std, standard error and whether the mean
  exceeds twice the standard error."""
  columns = ['teacher'] + [c for c in CONTROLS if all(c in r for r in rows)] + ['student']
  out = {'rows': rows, 'columns': columns, 'mean': {}, 'std': {}, 'gains': {}}
  for column in columns:
    out['mean'][column], out['std'][column] = mean_std([r[column] for r in rows])
  for base in columns[:-1]:
    diffs = [r['student'] - r[base] for r in rows]
    mean, std = mean_std(diffs)
    error = std / math.sqrt(len(diffs)) if std is not None else None
    out['gains'][base] = {'per_seed': diffs, 'mean': mean, 'std': std, 'standard_error': error,
                          'above_twice_the_error': None if error is None else mean > 2 * error}
  return out


def _pct(v):
  return '-' if v is None else f'{100 * v:.2f}'


def markdown(summary, title):
  """The summary as a markdown table and a line per gain."""
  columns = summary['columns']
  header = ['split seed'] + columns + [f'student - {b}' for b in columns[:-1]] + ['source']
  lines = [f'**{title}** (top-1 %)', '', '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  for i, row in enumerate(summary['rows']):
    gains = [summary['gains'][base]['per_seed'][i] for base in columns[:-1]]
    lines.append(f"| {row['split_seed']} | " + ' | '.join(_pct(row[c]) for c in columns) + ' | '
                 + ' | '.join(f'{100 * g:+.2f}' for g in gains)
                 + f" | {row.get('note') or row['source']} |")
  mean = ' | '.join(f"{_pct(summary['mean'][c])} ± {_pct(summary['std'][c])}" for c in columns)
  gains = ' | '.join(
      f"{100 * summary['gains'][b]['mean']:+.2f} ± {_pct(summary['gains'][b]['std'])}"
      for b in columns[:-1])
  lines.append(f'| **mean ± std** | {mean} | {gains} | {len(summary["rows"])} seeds |')
  lines.append('')
  for base, gain in summary['gains'].items():
    if gain['standard_error'] is None:
      continue
    verdict = 'larger' if gain['above_twice_the_error'] else 'not larger'
    lines.append(f"- student - {base}: {100 * gain['mean']:+.2f} points, standard error "
                 f"{100 * gain['standard_error']:.2f} over {len(gain['per_seed'])} seeds: "
                 f'{verdict} than twice its error.')
  return '\n'.join(lines) + '\n'


def main(argv):
  """Writes FLAGS.output.json and .md from the work dirs and recorded rows."""
  del argv
  rows = [dict(r, source=r.get('source', 'recorded')) for r in
          (_read(FLAGS.recorded) if FLAGS.recorded else [])]
  rows += [work_dir_row(w) for w in FLAGS.work_dirs]
  if not rows:
    raise app.UsageError('give --work_dirs and/or --recorded')
  rows.sort(key=lambda r: r['split_seed'])
  summary = summarise(rows)
  text = markdown(summary, FLAGS.title)
  for ext, content in (('json', json.dumps(summary, indent=1) + '\n'), ('md', text)):
    path = f'{FLAGS.output}.{ext}'
    with open(path + '.tmp', 'w') as f:
      f.write(content)
    os.replace(path + '.tmp', path)
  print(text)


if __name__ == '__main__':
  app.run(main)
