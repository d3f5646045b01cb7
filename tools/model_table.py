"""Prints one row per named EfficientNet variant: parameters, FLOPs at its resolution, resolution and
dropout, beside the EfficientNet paper's figures (Table 2; L2 from the Noisy Student paper).

Usage: python tools/model_table.py [--json]
"""

import json

from absl import app, flags

from noisy_student_tf import models

FLAGS = flags.FLAGS


def define_flags():
  """Defines the tool's flags (only when run as a script: importing it beside the ns-* binaries,
  as the tests do, must not define a second --num_classes)."""
  flags.DEFINE_bool('json', False, 'Print JSON instead of a markdown table.')
  flags.DEFINE_integer('num_classes', 1000, 'Classifier width used for the counts.')

# (parameters, FLOPs) as printed in the papers; None where the paper gives no figure.
PAPER = {'efficientnet-b0': (5.3e6, 0.39e9), 'efficientnet-b1': (7.8e6, 0.70e9),
         'efficientnet-b2': (9.2e6, 1.0e9), 'efficientnet-b3': (12e6, 1.8e9),
         'efficientnet-b4': (19e6, 4.2e9), 'efficientnet-b5': (30e6, 9.9e9),
         'efficientnet-b6': (43e6, 19e9), 'efficientnet-b7': (66e6, 37e9),
         'efficientnet-b8': (None, None), 'efficientnet-l2': (480e6, None),
         'efficientnet-l2-475': (480e6, None)}


def model_rows(num_classes=1000):
  """Returns a list of dicts, one per named variant, with our counts and the paper's."""
  rows = []
  for name, row in models.NAMED_VARIANTS.items():
    prof = models.profile(models.make_config(name, num_classes))
    paper_params, paper_flops = PAPER[name]
    rows.append({'model': name, 'params': prof.params, 'trainable_params': prof.trainable_params,
                 'flops': prof.flops, 'resolution': row.resolution, 'dropout': row.dropout,
                 'width': row.width, 'depth': row.depth,
                 'paper_params': paper_params, 'paper_flops': paper_flops})
  return rows


def _fmt(value, scale, unit):
  return '—' if value is None else f'{value / scale:.3g}{unit}'


def markdown(rows):
  """Returns the rows as a markdown table."""
  lines = ['| model | width | depth | resolution | dropout | params | paper params | FLOPs | paper FLOPs |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['model']} | {r['width']} | {r['depth']} | {r['resolution']} | {r['dropout']} "
                 f"| {_fmt(r['params'], 1e6, 'M')} | {_fmt(r['paper_params'], 1e6, 'M')} "
                 f"| {_fmt(r['flops'], 1e9, 'B')} | {_fmt(r['paper_flops'], 1e9, 'B')} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  rows = model_rows(FLAGS.num_classes)
  print(json.dumps(rows, indent=2) if FLAGS.json else markdown(rows))


if __name__ == '__main__':
  define_flags()
  app.run(main)
