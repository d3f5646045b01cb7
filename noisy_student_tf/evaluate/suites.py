"""Robustness suites of ns-eval: `run_suite(name, model_dir, ...)` for name in SUITES.

- imagenet_a:  top-1 on ImageNet-A with predictions restricted to its 200 classes.
- imagenet_c:  top-1 error per corruption and severity on ImageNet-C, CE and mCE normalised by
               AlexNet, relative mCE when clean data is given.
- imagenet_p:  flip probability per perturbation sequence of a local ImageNet-P copy, mFR.
- corruptions: TFDS's ImageNet-C corruption functions applied to any labeled source, error per
               corruption and severity, normalised by a baseline model dir (student vs teacher).
Each writes OUTPUT_DIR/<suite>.json, <suite>.md (a table) and, for the corruption suites,
<suite>.png (bar chart of error per corruption). Expected calibration error is reported next to
every accuracy. A missing dataset raises FileNotFoundError naming it and how to obtain it.
"""

import contextlib
import dataclasses
import glob
import json
import logging
import os
import time
from typing import Optional, Tuple

import numpy as np

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import progress as progress_lib
from noisy_student_tf.settings import setting
from noisy_student_tf.evaluate import calibration, corruptions as corruptions_lib, robustness

log = logging.getLogger(__name__)

SUITES = ('imagenet_a', 'imagenet_c', 'imagenet_p', 'corruptions')
_IMAGENET_A_HOWTO = (
    'ImageNet-A is not available. Either build the TFDS dataset `imagenet_a` where the internet '
    'is reachable (`tfds build imagenet_a --data_dir=DIR`, it downloads '
    'https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar) and copy DIR/imagenet_a here '
    '(pass data_dir / --data_dir), or extract imagenet-a.tar and pass eval_data="folder:PATH/'
    'imagenet-a" (200 wnid folders)')
_IMAGENET_C_HOWTO = (
    'ImageNet-C is not available: {missing}. Either prepare the TFDS configs '
    '`imagenet2012_corrupted/<corruption>_<severity>` (`tfds build imagenet2012_corrupted` needs '
    'the ImageNet-2012 tarballs in its manual dir; see '
    'https://www.tensorflow.org/datasets/catalog/imagenet2012_corrupted) and pass data_dir, or '
    'download the released JPEGs (https://zenodo.org/record/2235448) and pass imagenet_c_dir with '
    'the layout ROOT/<corruption>/<severity>/<wnid>/*.JPEG')
_IMAGENET_P_HOWTO = (
    'ImageNet-P is not available at {root!r}: download the released sequences '
    '(https://zenodo.org/record/3565846) and pass imagenet_p_dir with the layout '
    'ROOT/<perturbation>/<wnid>/<name>.mp4 (or folders of frames ROOT/<perturbation>/<wnid>/<name>/'
    '*.png|jpg in frame order)')


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
  """Settings of evaluation: plain ns-eval and the robustness suites (each field's help:
  settings.help_of; ns-eval has one flag per field)."""
  output_dir: str = setting('', 'Suites: where the results go (default MODEL_DIR/robustness).')
  eval_data: Optional[str] = setting(None, 'Labeled source spec: folder:PATH, tfds:NAME:SPLIT, '
                                     'tfrecord:GLOB, digits:test. Suites: corruptions needs it; '
                                     'imagenet_a: overrides tfds:imagenet_a:test; imagenet_c: '
                                     'clean data for relative mCE.')
  data_dir: Optional[str] = setting(None, 'tensorflow-datasets data dir for tfds: sources.')
  baseline_model_dir: Optional[str] = setting(None, "Suites: a second model dir (e.g. the "
                                              "teacher) whose errors normalise the model's (CE / "
                                              'mCE vs baseline).')
  more_model_dirs: Tuple[str, ...] = setting((), 'corruptions suite: more model dirs scored on '
                                             'the same corrupted images as the model (e.g. '
                                             "every generation's student against one teacher), "
                                             'each corruption made once for all; each writes '
                                             'its own results in its MODEL_DIR/robustness.')
  corruptions: Optional[Tuple[str, ...]] = setting(None, 'Suites: corruption / perturbation names '
                                                   '(default: every benchmark one available '
                                                   'here).')
  severities: Tuple[int, ...] = setting(robustness.SEVERITIES, 'Suites: corruption severities '
                                        '(1..5).')
  resolution: Optional[int] = setting(None, 'Evaluation resolution (default: the training one).')
  weights: str = setting('ema', 'Which final weights.',
                         choices=tuple(sorted(model_dir_lib.WEIGHT_FILES)))
  batch_size: int = setting(128, 'Evaluation batch size.')
  max_examples: Optional[int] = setting(None, 'Evaluate a seeded sample of N images of each '
                                        'source (class-stratified where labels are known, '
                                        'uniform otherwise): the same images for a model and its '
                                        'baseline.')
  sample_seed: int = setting(0, 'Seed of the --max_examples sample.')
  seed: int = setting(0, 'Suites: seed of the corruption randomness (deterministic per image).')
  frost_dir: Optional[str] = setting(None, 'corruptions suite: a folder of frost images for the '
                                     'frost corruption.')
  work_size: Optional[int] = setting(None, 'corruptions suite: corrupt at this size (default: '
                                     'the evaluation size).')
  imagenet_c_dir: Optional[str] = setting(None, 'imagenet_c suite: a local ImageNet-C copy '
                                          'ROOT/<corruption>/<severity>/<wnid>/*.JPEG (default: '
                                          'TFDS imagenet2012_corrupted in --data_dir).')
  imagenet_p_dir: Optional[str] = setting(None, 'imagenet_p suite: a local ImageNet-P copy '
                                          'ROOT/<perturbation>/<wnid>/<name>.mp4.')
  ece_bins: int = setting(15, 'Suites: bins of the expected calibration error.')


# ----------------------------------------------------------------------------- model + prediction

@dataclasses.dataclass
class _Loaded:
  model_dir: str
  model: object
  config: object
  resolution: int
  predict: object
  progress: str = 'auto'  # the display of its predictions (noisy_student_tf.progress.MODES)


def _load(model_dir, options, progress='auto'):
  from noisy_student_tf.evaluate import evaluator  # pylint: disable=import-outside-toplevel
  config = model_dir_lib.read_config(model_dir)
  resolution = int(options.resolution or config.model.resolution)
  model, config = model_dir_lib.load_model(model_dir, weights=options.weights,
                                           resolution=resolution)
  return _Loaded(model_dir, model, config, resolution, evaluator.make_predict_fn(model), progress)


def _open(spec, options):
  from noisy_student_tf.data import order, sources  # pylint: disable=import-outside-toplevel
  source = sources.open_source(spec, data_dir=options.data_dir)
  if options.max_examples:
    source = order.sample_source(source, int(options.max_examples), options.sample_seed)
  return source


def _predict(loaded, source, options, image_transform=None, convention=None, bar=None):
  """Logits [N, C] and labels [N] of `loaded` on `source` (eval crop, optional transform).
  bar: a progress_lib.Progress of a longer run to count the images in (default: one of its own)."""
  [logits], labels = _predict_each([loaded], source, options, image_transform, convention, bar)
  return logits, labels


def _same_input(models):
  """Whether the _Loaded `models` take the same images (resolution, crop, normalisation)."""
  return len({(m.resolution, m.config.model.small_image, m.config.input) for m in models}) == 1


def _predict_each(models, source, options, image_transform=None, convention=None, bar=None):
  """([logits [N, C] of each of `models`], labels [N]) on `source`: one input pipeline whose
  batches (eval crop, optional transform: a corruption made once) every model predicts; the
  models must take the same input (_same_input).  bar: as _predict's."""
  from noisy_student_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  first = models[0]
  if not _same_input(models):
    raise ValueError('models with different inputs cannot share a pipeline: '
                     + ', '.join(m.model_dir for m in models))
  dataset = pipeline.make_eval_dataset(
      source, batch_size=options.batch_size, resolution=first.resolution,
      convention=convention or first.config.input, small_image=first.config.model.small_image,
      image_transform=image_transform)
  logits, labels = [[] for _ in models], []
  with contextlib.ExitStack() as stack:
    if bar is None:
      bar = stack.enter_context(progress_lib.Progress(
          f'{first.model_dir} on {source.spec}', source.num_examples, 'images', first.progress,
          logger=log))
    for batch in dataset:
      for out, model in zip(logits, models):
        out.append(model.predict(batch['image']).numpy())
      labels.append(batch['label'].numpy())
      bar.update(len(labels[-1]))
  if not labels:
    raise ValueError(f'{source.spec!r} yielded no images')
  return [np.concatenate(out) for out in logits], np.concatenate(labels)


def _scores(logits, labels, options):
  """top1/top5/error/ece/num_examples of logits against labels (labels >= 0 only)."""
  from noisy_student_tf.evaluate.metrics import ClassificationMetrics  # TRAIN's; pylint: disable=import-outside-toplevel
  keep = labels >= 0
  if not keep.any():
    raise ValueError('the evaluation data has no labeled examples')
  m = ClassificationMetrics()
  m.update(logits[keep], labels[keep])
  r = m.result()
  ece = calibration.expected_calibration_error_from_logits(logits[keep], labels[keep],
                                                           options.ece_bins)
  return {'top1': r['top1'], 'top5': r['top5'], 'error': 1.0 - r['top1'], 'ece': ece,
          'num_examples': r['num_examples']}


# ----------------------------------------------------------------------------- reports

def _write_outputs(result, name, options, table_md, chart=None):
  os.makedirs(options.output_dir, exist_ok=True)
  base = os.path.join(options.output_dir, name)
  model_dir_lib.atomic_write_text(base + '.json', json.dumps(result, indent=2, sort_keys=True))
  model_dir_lib.atomic_write_text(base + '.md', table_md)
  files = {'json': base + '.json', 'markdown': base + '.md'}
  if chart is not None:
    _bar_chart(base + '.png', **chart)
    files['png'] = base + '.png'
  log.info('wrote %s', ', '.join(files.values()))
  return files


def _bar_chart(path, labels, series, ylabel, title):
  """Grouped bar chart: one group per label, one bar per (name, values) in `series`."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  width = 0.8 / max(len(series), 1)
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 4))
  x = np.arange(len(labels))
  for i, (name, values) in enumerate(series):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, [100 * v for v in values], width, label=name)
  ax.set_xticks(x)
  ax.set_xticklabels(labels, rotation=45, ha='right')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  top = max([100 * v for _, values in series for v in values] + [1.0])
  ax.set_ylim(0, top * 1.25)  # room for the legend above the bars
  ax.legend(loc='upper left', ncol=len(series), fontsize='small')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def _fmt(v, pct=True):
  if v is None:
    return '-'
  return f'{100 * v:.2f}' if pct else f'{v:.1f}'


# ----------------------------------------------------------------------------- corruption runs

def _corruption_errors(models, source, names, severities, options, convention=None,
                       spec_for=None, bar=None):
  """Per model of `models` (_Loaded taking the same input): per corruption, the list of
  per-severity scores.  Either transforms `source` with TFDS's functions (each corrupted copy
  made once for every model), or (spec_for) opens a pre-corrupted source per (corruption,
  severity).  bar: the progress_lib.Progress counting the images of the whole suite."""
  out = [{} for _ in models]
  for name in names:
    for per in out:
      per[name] = []
    for s in severities:
      start = time.time()
      if bar is not None:
        bar.set_postfix(f'{name} severity {s}')
      if spec_for is None:
        transform = corruptions_lib.make_image_transform(
            name, s, seed=options.seed, frost_dir=options.frost_dir, work_size=options.work_size)
        logits, labels = _predict_each(models, source, options, transform, convention, bar)
      else:
        logits, labels = _predict_each(models, _open(spec_for(name, s), options), options,
                                       None, convention, bar)
      for per, model, model_logits in zip(out, models, logits):
        score = _scores(model_logits, labels, options)
        per[name].append(score)
        log.info('%s %s severity %d: error %.4f ece %.4f (%d images, %.1fs)', model.model_dir,
                 name, s, score['error'], score['ece'], score['num_examples'],
                 time.time() - start)
  return out


def _summarise(per_corruption, clean):
  errors = {c: [s['error'] for s in v] for c, v in per_corruption.items()}
  mean_err = {c: float(np.mean(e)) for c, e in errors.items()}
  return {
      'clean': clean,
      'errors': errors,
      'ece': {c: [s['ece'] for s in v] for c, v in per_corruption.items()},
      'mean_error': mean_err,
      'mean_ece': {c: float(np.mean([s['ece'] for s in v])) for c, v in per_corruption.items()},
      'mean_corruption_error_unnormalized': float(np.mean(list(mean_err.values()))),
      # images per corrupted copy (one corruption at one severity)
      'num_examples': next(iter(per_corruption.values()))[0]['num_examples'],
  }


def _vs_baseline(model, baseline):
  """CE / mCE and relative ones of `model` normalised by `baseline` (both _summarise dicts)."""
  errors, ref = model['errors'], baseline['errors']
  out = {'ce_vs_baseline': robustness.corruption_errors(errors, ref),
         'mce_vs_baseline': robustness.mean_corruption_error(errors, ref, corruptions=None)}
  if model['clean'] and baseline['clean']:
    try:
      out['relative_ce_vs_baseline'] = robustness.relative_corruption_errors(
          errors, model['clean']['error'], ref, baseline['clean']['error'])
      out['relative_mce_vs_baseline'] = float(np.mean(list(
          out['relative_ce_vs_baseline'].values())))
    except ValueError as e:  # a corruption that did not hurt the baseline at all
      out['relative_mce_vs_baseline'] = None
      out['relative_note'] = str(e)
  return out


def _corruption_table(result, title):
  model, base = result['model'], result.get('baseline')
  sev = ', '.join(str(s) for s in result['severities'])
  head = ['corruption', 'error %', 'ECE %', f'error per severity ({sev}) %']
  if base:
    head += ['baseline error %', 'CE vs baseline']
  if 'ce_vs_alexnet' in result:
    head += ['CE vs AlexNet']
  lines = [f'### {title}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  rows = result.get('corruptions') or list(model['errors'])
  for c in rows:
    row = [c, _fmt(model['mean_error'][c]), _fmt(model['mean_ece'][c]),
           ' / '.join(_fmt(e) for e in model['errors'][c])]
    if base:
      row += [_fmt(base['mean_error'][c]), _fmt(result['ce_vs_baseline'][c], pct=False)]
    if 'ce_vs_alexnet' in result:
      row += [_fmt(result['ce_vs_alexnet'][c], pct=False)]
    lines.append('| ' + ' | '.join(row) + ' |')
  mean = ['**mean**', _fmt(model['mean_corruption_error_unnormalized']),
          _fmt(float(np.mean(list(model['mean_ece'].values())))), '']
  if base:
    mean += [_fmt(base['mean_corruption_error_unnormalized']),
             f"**{_fmt(result['mce_vs_baseline'], pct=False)}** (mCE)"]
  if 'ce_vs_alexnet' in result:
    mean += [f"**{_fmt(result['mce'], pct=False)}** (mCE)"]
  lines.append('| ' + ' | '.join(mean) + ' |')
  if model['clean']:
    clean = model['clean']
    lines += ['', f"Clean: top-1 {_fmt(clean['top1'])} %, ECE {_fmt(clean['ece'])} %"
              + (f", baseline top-1 {_fmt(base['clean']['top1'])} %" if base else '')
              + f" ({clean['num_examples']} images)."]
  for key, label in (('relative_mce_vs_baseline', 'Relative mCE vs baseline'),
                     ('relative_mce', 'Relative mCE vs AlexNet')):
    if result.get(key) is not None:
      lines.append(f'{label}: {_fmt(result[key], pct=False)}.')
  if result.get('skipped'):
    lines += ['', 'Not run here: ' + '; '.join(result['skipped'].values()) + '.']
  return '\n'.join(lines) + '\n'


def _short_name(model_dir):
  """The legend name of a model dir: its last two path parts (W/gen1/model -> gen1/model)."""
  parts = os.path.normpath(model_dir).split(os.sep)
  return '/'.join(parts[-2:])


def _chart(result, title):
  names = result.get('corruptions') or list(result['model']['errors'])
  labels = (['clean'] if result['model']['clean'] else []) + names

  def series(summary):
    vals = [summary['mean_error'][c] for c in names]
    return ([summary['clean']['error']] if summary['clean'] else []) + vals
  s = [('model: ' + _short_name(result['model_dir']), series(result['model']))]
  if result.get('baseline'):
    s.append(('baseline: ' + _short_name(result['baseline_model_dir']),
              series(result['baseline'])))
  return {'labels': labels, 'series': s, 'ylabel': 'top-1 error (%)', 'title': title}


def run_corruptions(model_dir, options: SuiteOptions, progress='auto'):
  """The `corruptions` suite: TFDS corruptions on options.eval_data for the model and, when given,
  options.baseline_model_dir and options.more_model_dirs (each corrupted copy made once for all
  the models that take the same input). Returns the model's result dict (also written as
  JSON/markdown/PNG in options.output_dir; each more model dir's in its MODEL_DIR/robustness,
  their file paths under 'more').
  progress: one of noisy_student_tf.progress.MODES (images of every pass, ETA of the model's)."""
  if not options.eval_data:
    raise ValueError('the corruptions suite needs eval_data (a labeled source spec such as '
                     'folder:PATH or tfds:cifar10:test)')
  if options.corruptions:
    names, severities = corruptions_lib.check_corruptions(
        options.corruptions, options.severities, options.frost_dir)
    skipped = {}
  else:
    status = corruptions_lib.corruption_status(options.frost_dir)
    names = tuple(c for c in robustness.IMAGENET_C_CORRUPTIONS if status[c] is None)
    skipped = {c: status[c] for c in robustness.IMAGENET_C_CORRUPTIONS if status[c]}
    _, severities = corruptions_lib.check_corruptions(names, options.severities,
                                                      options.frost_dir)
  extras = tuple(options.more_model_dirs or ())
  named = [model_dir, options.baseline_model_dir, *extras]
  norm = [os.path.normpath(d) for d in named if d]
  if len(set(norm)) != len(norm):
    raise ValueError(f'the model, baseline and more model dirs must differ, got {named!r}')
  dirs = [('model', model_dir)] + [(f'more{i}', d) for i, d in enumerate(extras)]
  if options.baseline_model_dir:
    dirs.append(('baseline', options.baseline_model_dir))
  for _, d in dirs:
    model_dir_lib.read_config(d)  # fail early on a wrong dir
  source = _open(options.eval_data, options)
  start = time.time()
  passes = 1 + len(names) * len(severities)
  loaded = {}
  for role, d in dirs:
    loaded[role] = _load(d, options, progress)
    classes = loaded[role].config.model.num_classes
    if source.num_classes is not None and source.num_classes != classes:
      raise ValueError(f'{options.eval_data!r} has {source.num_classes} classes but the model in '
                       f'{d!r} has {classes}')
  # Models that take the same input see the same corrupted images, made once for all of them.
  groups = {}
  for role, m in loaded.items():
    groups.setdefault((m.resolution, m.config.model.small_image, m.config.input), []).append(role)
  summaries = {}
  for roles in groups.values():
    models = [loaded[r] for r in roles]
    with progress_lib.Progress(f'corruptions {" and ".join(roles)}', source.num_examples and
                               passes * source.num_examples, 'images', progress,
                               logger=log) as bar:
      bar.set_postfix('clean')
      clean_logits, labels = _predict_each(models, source, options, bar=bar)
      per = _corruption_errors(models, source, names, severities, options, bar=bar)
    for role, logits, errors in zip(roles, clean_logits, per):
      summaries[role] = _summarise(errors, _scores(logits, labels, options))
  seconds = time.time() - start
  title = f"Corruption robustness on {options.eval_data}"
  results = {}
  # The more model dirs first, so that the model's files can name theirs.
  for role, d in dirs[1:] + dirs[:1]:
    if role == 'baseline':
      continue
    result = {'suite': 'corruptions', 'model_dir': d,
              'baseline_model_dir': options.baseline_model_dir, 'eval_data': options.eval_data,
              'severities': list(severities), 'corruptions': list(names), 'skipped': skipped,
              'seed': options.seed, 'work_size': options.work_size, 'model': summaries[role]}
    if extras:
      result['scored_with'] = [m for _, m in dirs if m != d]
    if role == 'model' and extras:
      result['more'] = {m: results[r]['files'] for r, m in dirs if r.startswith('more')}
    if options.baseline_model_dir:
      result['baseline'] = summaries['baseline']
      result.update(_vs_baseline(result['model'], result['baseline']))
    clean = result['model']['clean']
    result.update(top1=clean['top1'], top5=clean['top5'], ece=clean['ece'],
                  num_examples=clean['num_examples'], seconds=seconds)
    out = options if role == 'model' else dataclasses.replace(
        options, output_dir=os.path.join(d, 'robustness'))
    result['files'] = _write_outputs(result, 'corruptions', out,
                                     _corruption_table(result, title), _chart(result, title))
    results[role] = result
  return results['model']


def _tfds_prepared(name, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    return tfds.builder(name, data_dir=data_dir).is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


def run_imagenet_c(model_dir, options: SuiteOptions, progress='auto'):
  """The `imagenet_c` suite: ImageNet-C from TFDS (imagenet2012_corrupted) or a local copy
  (options.imagenet_c_dir); CE, mCE vs AlexNet, relative mCE when options.eval_data names the
  clean validation set, and vs baseline when given. Returns the result dict.
  progress: one of noisy_student_tf.progress.MODES (images per second over every copy)."""
  names, severities = tuple(options.corruptions or robustness.IMAGENET_C_CORRUPTIONS), tuple(
      int(s) for s in options.severities)
  unknown = [c for c in names if c not in corruptions_lib.ALL_CORRUPTIONS]
  if unknown or not set(severities) <= set(robustness.SEVERITIES):
    raise ValueError(f'bad corruptions {unknown} or severities {list(severities)}; expected '
                     f'names from {list(corruptions_lib.ALL_CORRUPTIONS)} and severities in 1..5')
  if options.imagenet_c_dir:
    def spec_for(c, s):
      return f'folder:{os.path.join(options.imagenet_c_dir, c, str(s))}'
    missing = [f'{options.imagenet_c_dir}/{c}/{s}' for c in names for s in severities
               if not os.path.isdir(os.path.join(options.imagenet_c_dir, c, str(s)))]
  else:
    def spec_for(c, s):
      return f'tfds:imagenet2012_corrupted/{c}_{s}:validation'
    missing = [f'tfds imagenet2012_corrupted/{c}_{s}' for c in names for s in severities
               if not _tfds_prepared(f'imagenet2012_corrupted/{c}_{s}', options.data_dir)]
  if missing:
    shown = ', '.join(missing[:3]) + (f' and {len(missing) - 3} more' if len(missing) > 3 else '')
    raise FileNotFoundError(_IMAGENET_C_HOWTO.format(missing=shown))
  for d in filter(None, (model_dir, options.baseline_model_dir)):
    if model_dir_lib.read_config(d).model.num_classes != 1000:
      raise ValueError(f'ImageNet-C needs a 1000-class ImageNet model; {d!r} has '
                       f'{model_dir_lib.read_config(d).model.num_classes} classes')
  result = {'suite': 'imagenet_c', 'model_dir': model_dir,
            'baseline_model_dir': options.baseline_model_dir, 'severities': list(severities),
            'corruptions': list(names), 'data': options.imagenet_c_dir or 'tfds',
            'clean_data': options.eval_data}
  start = time.time()
  for role, d in (('model', model_dir), ('baseline', options.baseline_model_dir)):
    if not d:
      continue
    loaded = _load(d, options, progress)
    # ImageNet-C images are already 224 px center crops: resize only, crop nothing more.
    convention = dataclasses.replace(loaded.config.input, crop_padding=0)
    clean = (_scores(*_predict(loaded, _open(options.eval_data, options), options), options)
             if options.eval_data else None)
    with progress_lib.Progress(f'imagenet_c {role}', None, 'images', progress, logger=log) as bar:
      [per] = _corruption_errors([loaded], None, names, severities, options, convention,
                                 spec_for, bar)
    result[role] = _summarise(per, clean)
  errors = result['model']['errors']
  benchmark = [c for c in names if c in robustness.ALEXNET_ERR]
  result['ce_vs_alexnet'] = robustness.corruption_errors({c: errors[c] for c in benchmark})
  result['complete'] = (set(benchmark) == set(robustness.IMAGENET_C_CORRUPTIONS)
                        and severities == robustness.SEVERITIES)
  result['mce'] = float(np.mean(list(result['ce_vs_alexnet'].values()))) if benchmark else None
  if result['model']['clean'] and benchmark:
    result['relative_mce'] = robustness.relative_mean_corruption_error(
        {c: errors[c] for c in benchmark}, result['model']['clean']['error'], corruptions=None)
  if options.baseline_model_dir:
    result.update(_vs_baseline(result['model'], result['baseline']))
  mean_err = result['model']['mean_corruption_error_unnormalized']
  result.update(top1=1.0 - mean_err, num_examples=result['model']['num_examples'],
                seconds=time.time() - start)
  title = 'ImageNet-C' + ('' if result['complete'] else ' (partial: mCE not comparable)')
  result['files'] = _write_outputs(result, 'imagenet_c', options,
                                   _corruption_table(result, title), _chart(result, title))
  return result


def run_imagenet_a(model_dir, options: SuiteOptions, progress='auto'):
  """The `imagenet_a` suite: top-1 over the 200 ImageNet-A classes (tfds:imagenet_a:test, or
  options.eval_data such as folder:PATH/imagenet-a). Returns the result dict.
  progress: one of noisy_student_tf.progress.MODES (images)."""
  spec = options.eval_data or 'tfds:imagenet_a:test'
  if spec.startswith('tfds:') and not _tfds_prepared(spec[5:].partition(':')[0],
                                                     options.data_dir):
    raise FileNotFoundError(_IMAGENET_A_HOWTO)
  if spec.startswith('folder:') and not os.path.isdir(spec[7:]):
    raise FileNotFoundError(f'{spec[7:]!r} not found. ' + _IMAGENET_A_HOWTO)
  config = model_dir_lib.read_config(model_dir)
  if config.model.num_classes != 1000:
    raise ValueError(f'ImageNet-A needs a 1000-class ImageNet model; {model_dir!r} has '
                     f'{config.model.num_classes} classes')
  source = _open(spec, options)
  if source.num_classes not in (200, 1000):
    raise ValueError(f'{spec!r} has {source.num_classes} classes; ImageNet-A has 200 (folders) '
                     'or 1000 (TFDS labels)')
  start = time.time()
  loaded = _load(model_dir, options, progress)
  logits, labels = _predict(loaded, source, options)
  space = '200' if source.num_classes == 200 else '1k'
  labels_a = labels if space == '200' else robustness.imagenet_a_labels(labels)
  restricted = logits[:, list(robustness.IMAGENET_A_INDICES)]
  acc = robustness.imagenet_a_accuracy(logits, labels, space)
  labels_1k = np.asarray(robustness.IMAGENET_A_INDICES)[labels_a]
  result = {'suite': 'imagenet_a', 'model_dir': model_dir, 'eval_data': spec,
            'top1': acc, 'error': 1.0 - acc,
            'ece': calibration.expected_calibration_error_from_logits(restricted, labels_a,
                                                                      options.ece_bins),
            'top1_1000_way': float(np.mean(np.argmax(logits, 1) == labels_1k)),
            'num_examples': int(len(labels)), 'seconds': time.time() - start}
  table = ('| model | ImageNet-A top-1 % (200-way) | ECE % | top-1 % (1000-way) | images |\n'
           '|---|---|---|---|---|\n'
           f"| {model_dir} | {_fmt(acc)} | {_fmt(result['ece'])} | "
           f"{_fmt(result['top1_1000_way'])} | {len(labels)} |\n")
  result['files'] = _write_outputs(result, 'imagenet_a', options, table)
  return result


def _sequence_paths(root, perturbation):
  """Sorted (class folder, sequence path) pairs of ROOT/perturbation: .mp4 files or frame dirs."""
  pairs = []
  for class_dir in sorted(glob.glob(os.path.join(root, perturbation, '*'))):
    if not os.path.isdir(class_dir):
      continue
    for entry in sorted(os.listdir(class_dir)):
      path = os.path.join(class_dir, entry)
      if entry.lower().endswith('.mp4') or os.path.isdir(path):
        pairs.append((os.path.basename(class_dir), path))
  return pairs


def read_sequence(path):
  """Frames of one ImageNet-P sequence as uint8 RGB [n, H, W, 3]: an .mp4 (decoded with OpenCV)
  or a folder of images in file-name order."""
  if os.path.isdir(path):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(('.png', '.jpg', '.jpeg')))
    return np.stack([np.asarray(Image.open(os.path.join(path, f)).convert('RGB')) for f in files])
  import cv2  # pylint: disable=import-outside-toplevel
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame[..., ::-1])
  capture.release()
  if not frames:
    raise ValueError(f'could not decode any frame of {path!r} (needs opencv-python-headless)')
  return np.stack(frames)


def run_imagenet_p(model_dir, options: SuiteOptions, progress='auto'):
  """The `imagenet_p` suite: flip probability (difficulty 1) of the model's top-1 over every
  sequence of each perturbation in options.imagenet_p_dir, FR vs AlexNet and mFR. Perturbations:
  options.corruptions or every folder present. Returns the result dict.
  progress: one of noisy_student_tf.progress.MODES (sequences)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from noisy_student_tf.data import order, preprocessing  # pylint: disable=import-outside-toplevel
  root = options.imagenet_p_dir
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(_IMAGENET_P_HOWTO.format(root=root))
  known = robustness.IMAGENET_P_PERTURBATIONS + robustness.IMAGENET_P_EXTRA_PERTURBATIONS
  names = tuple(options.corruptions or [p for p in known if os.path.isdir(os.path.join(root, p))])
  unknown = [p for p in names if p not in known]
  if unknown:
    raise ValueError(f'unknown ImageNet-P perturbation(s) {unknown}; expected some of {list(known)}')
  sequences = {p: _sequence_paths(root, p) for p in names}
  empty = [p for p in names if not sequences[p]]
  if not names or empty:
    raise FileNotFoundError(f'no sequences for {empty or "any perturbation"}. '
                            + _IMAGENET_P_HOWTO.format(root=root))
  start = time.time()
  loaded = _load(model_dir, options, progress)
  convention = loaded.config.input
  class_names = loaded.config.class_names
  chosen = dict(sequences)
  if options.max_examples:  # a class-stratified sample of the sequences, not the first N
    for p in names:
      classes = {c: k for k, c in enumerate(sorted({c for c, _ in chosen[p]}))}
      keep = order.stratified_indices([classes[c] for c, _ in chosen[p]], options.max_examples,
                                      options.sample_seed)
      chosen[p] = [chosen[p][k] for k in keep]
  fps, accuracy = {}, {}
  with progress_lib.Progress('imagenet_p', sum(len(chosen[p]) for p in names), 'sequences',
                             progress, logger=log) as bar:
    for p in names:
      preds, correct = [], []
      bar.set_postfix(p)
      for cls, path in chosen[p]:
        frames = tf.convert_to_tensor(read_sequence(path))
        images = tf.map_fn(lambda f: preprocessing.normalize(preprocessing.center_crop(
            f, loaded.resolution, convention, small_image=True), convention), frames,
                           fn_output_signature=tf.float32)
        seq = np.argmax(np.concatenate([loaded.predict(images[j:j + options.batch_size]).numpy()
                                        for j in range(0, len(frames), options.batch_size)]), 1)
        preds.append(seq)
        if class_names and cls in class_names:
          correct.append(np.mean(seq == class_names.index(cls)))
        bar.update(1)
      fps[p] = robustness.flip_probability(preds, robustness.is_noise_perturbation(p))
      accuracy[p] = float(np.mean(correct)) if correct else None
      log.info('%s: flip probability %.4f over %d sequences', p, fps[p], len(preds))
  frs = robustness.flip_rates(fps)
  benchmark = [p for p in names if p in robustness.IMAGENET_P_PERTURBATIONS]
  result = {'suite': 'imagenet_p', 'model_dir': model_dir, 'root': root,
            'flip_probability': fps, 'flip_rate': frs,
            'mfr': (float(np.mean([frs[p] for p in benchmark])) if benchmark else None),
            'complete': set(benchmark) == set(robustness.IMAGENET_P_PERTURBATIONS),
            'top1_per_perturbation': accuracy,
            'top1': (float(np.mean([a for a in accuracy.values() if a is not None]))
                     if any(a is not None for a in accuracy.values()) else None),
            'num_sequences': {p: len(sequences[p]) for p in names},
            'seconds': time.time() - start}
  lines = ['| perturbation | flip probability % | FR vs AlexNet |', '|---|---|---|']
  lines += [f'| {p} | {_fmt(fps[p])} | {_fmt(frs[p], pct=False)} |' for p in names]
  lines.append(f"| **mFR** |  | **{_fmt(result['mfr'], pct=False)}**"
               + ('' if result['complete'] else ' (partial)') + ' |')
  result['files'] = _write_outputs(
      result, 'imagenet_p', options, '\n'.join(lines) + '\n',
      {'labels': list(names), 'series': [('model', [fps[p] for p in names]),
                                         ('AlexNet', [robustness.ALEXNET_FP[p] for p in names])],
       'ylabel': 'flip probability (%)', 'title': 'ImageNet-P'})
  return result


_RUNNERS = {'imagenet_a': run_imagenet_a, 'imagenet_c': run_imagenet_c,
            'imagenet_p': run_imagenet_p, 'corruptions': run_corruptions}


def run_suite(name, model_dir, options: SuiteOptions = None, *, progress='auto', **kwargs):
  """Runs robustness suite `name` (one of SUITES) for the model in `model_dir`.

  options: a SuiteOptions, or pass its fields as keyword arguments (output_dir is required).
  progress: one of noisy_student_tf.progress.MODES: images (sequences for imagenet_p) per second
  and the ETA where the number is known.
  Returns the result dict (top-level 'top1', 'num_examples' where defined, and 'files': the
  JSON / markdown / PNG paths written under output_dir). Raises ValueError on bad arguments and
  FileNotFoundError for a missing dataset or model dir, before any evaluation.
  """
  if name not in _RUNNERS:
    raise ValueError(f'unknown suite {name!r}; expected one of {list(SUITES)}')
  if options is None:
    if not kwargs.get('output_dir'):
      raise ValueError('run_suite needs output_dir')
    options = SuiteOptions(**kwargs)
  elif kwargs:
    options = dataclasses.replace(options, **kwargs)
  if int(options.batch_size) < 1:
    raise ValueError(f'batch_size must be a positive integer, got {options.batch_size!r}')
  if options.weights not in model_dir_lib.WEIGHT_FILES:
    raise ValueError(f'weights must be one of {sorted(model_dir_lib.WEIGHT_FILES)}, got '
                     f'{options.weights!r}')
  progress_lib.check_mode(progress)
  if options.more_model_dirs and name != 'corruptions':
    raise ValueError(f'more_model_dirs is for the corruptions suite only, not {name!r}: got '
                     f'{list(options.more_model_dirs)!r}')
  model_dir_lib.read_config(model_dir)
  return _RUNNERS[name](model_dir, options, progress=progress)
