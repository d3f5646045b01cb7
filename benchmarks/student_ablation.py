"""What each choice of a Noisy Student recipe gives: students trained from one finished
ns-pipeline run's teacher and pseudo-labels, each changing one choice of the run's student.

  python benchmarks/student_ablation.py --work_dir=/tmp/ns-cifar10 --out=/tmp/ns-ablation \
      --steps=500 [--variants=recipe,no_noise,hard,ratio1,scratch,labeled_only,bfloat16@50]

WORK_DIR is an ns-pipeline work dir whose generation 0 is complete (W/gen0/model, W/gen0/pseudo,
W/gen0/balanced); its pipeline_config.json is the recipe.  Every variant trains generation 1's
model for the same number of steps (--steps; NAME@STEPS overrides it), with the same seed:

  recipe        the run's student, only shorter
  no_noise      no RandAugment, dropout 0, stochastic depth 0 (the paper's "noise" off)
  hard          hard pseudo-labels (argmax), labeled and filtered as the recipe's soft ones
  soft_t2       soft pseudo-labels at temperature 2 (flatter targets)
  conf07        the recipe's soft pseudo-labels, kept only at the teacher's confidence >= 0.7
                (filtered and balanced again; fewer, cleaner pseudo-labels)
  hard_conf07   hard pseudo-labels (argmax), kept only at confidence >= 0.7
  conf09        soft pseudo-labels kept only at confidence >= 0.9
  ratio1        1 pseudo-labeled row per labeled row instead of the recipe's ratio
  ratio1_same_rows   ratio 1, with as many steps as give the recipe's number of rows
  scratch       the student starts from random weights instead of the teacher's
  labeled_only  no pseudo-labels: the same rows per step, noise, peak learning rate and warmup,
                all rows from the labeled data (is the gain the pseudo-labels' or the extra steps'?)
  bfloat16      mixed_bfloat16 instead of float32 (for speed: AVX512_BF16 CPUs)
  xla           the training step compiled with XLA (jit_compile; for speed)

Writes OUT/ablation.json (one object per variant), OUT/ablation.md (a table) and OUT/ablation.png
(top-1 by variant against the teacher); each variant's model dir is OUT/<name>-<steps>/model.  A rerun
skips finished variants and resumes an interrupted one from its checkpoints.
"""

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.selftrain import controls
from noisy_student_tf.selftrain import shards

FLAGS = flags.FLAGS


def define_flags():
  """Defines this script's flags (only when run as a script, so that importing it next to the
  ns-* binaries, which define --work_dir too, does not clash)."""
  flags.DEFINE_string('work_dir', None, 'A finished ns-pipeline work dir (teacher, pseudo-labels).')
  flags.DEFINE_string('out', None, 'Output folder for the variants, ablation.json/.md/.png.')
  flags.DEFINE_integer('steps', 500, 'Training steps of every variant without an @STEPS suffix.')
  flags.DEFINE_list('variants', 'bfloat16@50,xla@10,recipe,no_noise,hard,labeled_only,ratio1,'
                    'scratch', 'Variants to train, in order; NAME@STEPS gives one its own step '
                    'count.')

VARIANTS = {
    'recipe': 'the recipe (shorter)',
    'no_noise': 'no RandAugment / dropout / stochastic depth',
    'hard': 'hard pseudo-labels',
    'soft_t2': 'soft pseudo-labels, temperature 2',
    'conf07': 'soft pseudo-labels, threshold 0.7',
    'hard_conf07': 'hard pseudo-labels, threshold 0.7',
    'conf09': 'soft pseudo-labels, threshold 0.9',
    'ratio1': 'pseudo ratio 1 (same steps)',
    'ratio1_same_rows': 'pseudo ratio 1 (same rows)',
    'scratch': 'student from scratch',
    'labeled_only': 'no pseudo-labels (labeled rows only)',
    'bfloat16': 'mixed_bfloat16',
    'xla': 'XLA-compiled step',
    'per_image': 'loss: every row alike, lab + ratio x unl (official code)',
    'per_stream': 'loss: mean CE(labeled) + mean CE(pseudo) (paper text)',
}

# Variants that label and filter again: (label settings, filter threshold).
THRESHOLD_VARIANTS = {'conf07': ({}, 0.7), 'hard_conf07': (dict(label_type='hard'), 0.7),
                      'conf09': ({}, 0.9)}


def parse_variants(specs, default_steps):
  """['name', 'name@steps', ...] -> [(name, steps or None)]; raises ValueError naming a bad one.

  steps None means the common --steps (or, for ratio1_same_rows, the rows-matched count)."""
  out = []
  for spec in specs:
    name, _, steps = spec.partition('@')
    if name not in VARIANTS:
      raise ValueError(f'unknown variant {name!r}; expected one of {sorted(VARIANTS)}')
    if steps and not (steps.isdigit() and int(steps) >= 1):
      raise ValueError(f'variant {spec!r}: the steps after @ must be an integer >= 1')
    out.append((name, int(steps) if steps else None))
  if not (isinstance(default_steps, int) and default_steps >= 1):
    raise ValueError(f'--steps must be an integer >= 1, got {default_steps!r}')
  return out


def load_recipe(work_dir):
  """The PipelineConfig of `work_dir` (W/pipeline_config.json) and the teacher's eval dict."""
  from noisy_student_tf.selftrain import pipeline  # pylint: disable=g-import-not-at-top
  path = os.path.join(work_dir, pipeline.CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'{work_dir!r} is not an ns-pipeline work dir: {path} is missing')
  with open(path) as f:
    raw = json.load(f)
  if 'teacher' not in raw:
    raise ValueError(f'{path} was written by an older ns-pipeline (flat settings, no teacher / '
                     'student tree); rerun ns-pipeline on a new work dir')
  config = pipeline.PipelineConfig.from_json(raw)
  needed = [os.path.join(config.gen_dir(0), 'eval.json'),
            os.path.join(config.gen_dir(0), 'balanced', 'stats.json'),
            os.path.join(config.gen_dir(0), 'pseudo', 'stats.json')]
  missing = [p for p in needed if not os.path.exists(p)]
  if missing:
    raise ValueError(f'{work_dir!r}: generation 0 is not finished ({missing[0]} is missing); run '
                     'ns-pipeline on it first')
  with open(needed[0]) as f:
    teacher_eval = json.load(f)
  return config, teacher_eval


def _relabel(recipe, out_dir, filter_overrides=None, **label_overrides):
  """Labels and filters the unlabeled data again with other label (and filter) settings; returns
  the balanced folder (skipped when already done)."""
  from noisy_student_tf.selftrain import filter as filter_lib  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.selftrain import label as label_lib  # pylint: disable=g-import-not-at-top
  label_config = dataclasses.replace(recipe.label_config(0),
                                     output_dir=os.path.join(out_dir, 'pseudo'), **label_overrides)
  if not label_lib.is_complete(label_config.output_dir):
    label_lib.label(label_config)
  filter_config = dataclasses.replace(recipe.filter_config(0), input=label_config.output_dir,
                                      output_dir=os.path.join(out_dir, 'balanced'),
                                      **(filter_overrides or {}))
  if not filter_lib.is_complete(filter_config.output_dir):
    filter_lib.filter_records(filter_config)
  return filter_config.output_dir


def variant_train_config(recipe, name, steps, out_dir):
  """The TrainConfig of variant `name` trained for `steps` into OUT_DIR/model.

  recipe: the run's PipelineConfig.  Returns (TrainConfig, rows per step)."""
  if name in controls.CONTROLS:  # the same controls ns-pipeline --controls trains
    train_config = controls.control_train_config(recipe.train_config(1), name, steps,
                                                 os.path.join(out_dir, 'model'))
    train_config = dataclasses.replace(train_config, checkpoint_every=min(200, steps))
    return train_config, controls.rows_per_step(train_config)
  student, changes = {}, {}
  if name in ('ratio1', 'ratio1_same_rows'):
    student = dict(unlabeled_ratio=1.0)
  elif name == 'scratch':
    changes = dict(student_init_from_teacher=False)
  elif name == 'bfloat16':
    student = dict(precision='mixed_bfloat16')
  elif name == 'xla':
    student = dict(jit_compile=True)
  elif name in ('per_image', 'per_stream'):
    student = dict(pseudo_loss_weighting=name)
  config = dataclasses.replace(recipe, student={**recipe.student, **student}, **changes)
  train_config = config.train_config(1)
  train_config = dataclasses.replace(train_config, model_dir=os.path.join(out_dir, 'model'),
                                     train_steps=steps, epochs=None,
                                     checkpoint_every=min(200, steps))
  if name == 'hard':
    hard = _relabel(recipe, out_dir, label_type='hard')
    train_config = dataclasses.replace(train_config,
                                       pseudo='pseudo:' + os.path.join(hard, '*.tfrecord'))
  elif name == 'soft_t2':
    flat = _relabel(recipe, out_dir, temperature=2.0)
    train_config = dataclasses.replace(train_config,
                                       pseudo='pseudo:' + os.path.join(flat, '*.tfrecord'))
  elif name in THRESHOLD_VARIANTS:
    label, threshold = THRESHOLD_VARIANTS[name]
    kept = _relabel(recipe, out_dir, filter_overrides=dict(threshold=threshold), **label)
    train_config = dataclasses.replace(train_config,
                                       pseudo='pseudo:' + os.path.join(kept, '*.tfrecord'))
  return train_config, controls.rows_per_step(train_config)


def run_variant(recipe, name, steps, out):
  """Trains (or resumes, or skips when done) one variant; returns its result row."""
  from noisy_student_tf.train import trainer  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(out, f'{name}-{steps}')
  result_path = os.path.join(out_dir, 'result.json')
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  train_config, rows = variant_train_config(recipe, name, steps, out_dir)
  logging.info('ablation: %s (%s): %d steps of %d rows', name, VARIANTS[name], steps, rows)
  result = trainer.train(train_config)
  row = {'variant': name, 'change': VARIANTS[name], 'steps': steps, 'rows_per_step': rows,
         'rows_seen': steps * rows, 'top1': result['top1'], 'top5': result['top5'],
         'train_seconds': round(result['seconds'], 1),
         'images_per_second': round(result['images_per_second'], 1),
         'seconds': round(time.time() - start, 1)}
  shards.write_json(result_path, row)
  return row


def write_report(out, rows, teacher_eval, full_student):
  """Writes OUT/ablation.json|.md|.png; returns the markdown table."""
  from noisy_student_tf import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
  recipe = next((r for r in rows if r['variant'] == 'recipe'), None)
  teacher = teacher_eval['top1']
  shards.write_json(os.path.join(out, 'ablation.json'),
              {'teacher_top1': teacher, 'full_student': full_student, 'variants': rows})
  lines = ['| variant | change | steps | rows/step | top-1 | vs teacher | vs recipe | img/s | '
           'train s |', '|---|---|---|---|---|---|---|---|---|',
           f'| teacher | - | - | - | {100 * teacher:.2f}% | - | - | - | - |']
  for r in rows:
    vs_recipe = ('-' if recipe is None or r is recipe or r['steps'] != recipe['steps']
                 else f'{100 * (r["top1"] - recipe["top1"]):+.2f}')
    lines.append(f'| {r["variant"]} | {r["change"]} | {r["steps"]} | {r["rows_per_step"]} | '
                 f'{100 * r["top1"]:.2f}% | {100 * (r["top1"] - teacher):+.2f} | {vs_recipe} | '
                 f'{r["images_per_second"]:.0f} | {r["train_seconds"]:.0f} |')
  if full_student:
    lines.append(f'| full run | the recipe at full length | {full_student["steps"]} | '
                 f'{full_student["rows_per_step"]} | {100 * full_student["top1"]:.2f}% | '
                 f'{100 * (full_student["top1"] - teacher):+.2f} | - | '
                 f'{full_student["images_per_second"]:.0f} | {full_student["train_seconds"]:.0f} |')
  table = '\n'.join(lines) + '\n'
  model_dir_lib.atomic_write_text(os.path.join(out, 'ablation.md'), table)
  _plot(os.path.join(out, 'ablation.png'), rows, teacher, full_student)
  return table


def _plot(path, rows, teacher, full_student):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = [f'{r["variant"]} ({r["steps"]} steps)' for r in rows]
  values = [100 * r['top1'] for r in rows]
  if full_student:
    labels.append(f'full run ({full_student["steps"]} steps)')
    values.append(100 * full_student['top1'])
  fig, ax = plt.subplots(figsize=(7, 0.45 * len(values) + 1.2))
  ax.barh(range(len(values)), values, color='tab:blue')
  ax.axvline(100 * teacher, color='tab:red', linestyle='--', label=f'teacher {100 * teacher:.2f}%')
  ax.set_yticks(range(len(values)), labels)
  ax.invert_yaxis()
  ax.set_xlim(max(0.0, min(values + [100 * teacher]) - 5), max(values + [100 * teacher]) + 2)
  ax.set_xlabel('test top-1 (%)')
  ax.legend(loc='lower right')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def _full_student(recipe):
  """The run's own generation-1 student (its train_result.json), or None."""
  path = os.path.join(recipe.model_dir(1), 'train_result.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  with open(os.path.join(recipe.model_dir(1), 'config.json')) as f:
    effective = json.load(f)['training']
  rows = effective['batch_size'] + round(effective['unlabeled_ratio'] * effective['batch_size'])
  return {'steps': result['step'], 'rows_per_step': rows, 'top1': result['top1'],
          'top5': result['top5'], 'train_seconds': round(result['seconds'], 1),
          'images_per_second': round(result['images_per_second'], 1)}


def main(argv):
  del argv
  if not FLAGS.work_dir or not FLAGS.out:
    raise app.UsageError('--work_dir and --out are required')
  variants = parse_variants(FLAGS.variants, FLAGS.steps)
  recipe, teacher_eval = load_recipe(FLAGS.work_dir)
  full = _full_student(recipe)
  os.makedirs(FLAGS.out, exist_ok=True)
  rows = []
  for name, steps in variants:
    if steps is None:
      steps = FLAGS.steps
      if name == 'ratio1_same_rows':
        ratio = recipe.train_config(1).unlabeled_ratio
        steps = int(round(FLAGS.steps * (1 + ratio) / 2))
    rows.append(run_variant(recipe, name, steps, FLAGS.out))
    table = write_report(FLAGS.out, rows, teacher_eval, full)
    logging.info('ablation so far:\n%s', table)
  print(table)


if __name__ == '__main__':
  define_flags()
  app.run(main)
