"""ns-pipeline's library: Noisy Student end to end, stage by stage, resumable anywhere.

  generation 0:  train the teacher on the labeled data (or take a given teacher model dir)
  generation g:  label the unlabeled data with the generation g-1 model (un-noised), filter and
                 balance, train a noised, equal-or-larger student on labeled + pseudo-labeled
                 data; the student is the next teacher.

Work dir layout (every stage is skipped when its outputs are complete, and the stages that can
be interrupted resume on their own: the trainer from its checkpoints, the labeler by shard):

  W/pipeline_config.json   the settings of the run
  W/data/                  the labeled / unlabeled split (only with labeled_per_class)
  W/gen<g>/model/          the generation's model dir (ns-train)
  W/gen<g>/eval.json       its test accuracy
  W/gen<g>/pseudo/         its pseudo-labels of the unlabeled data (ns-label)
  W/gen<g>/balanced/       the filtered, balanced pseudo-labels (ns-filter): gen g+1's data
  W/report.json|.md|.png   one row per generation: generation, model, top1, top5,
                           num_pseudo_labels, seconds (+ stage times and label quality)
"""

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from typing import Optional, Tuple

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.data import preprocessing
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain import split as split_lib

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
REPORT_PNG = 'report.png'
CONFIG_FILE = 'pipeline_config.json'
TIMES_FILE = 'stage_seconds.json'


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every setting of one ns-pipeline run.

  Data: `labeled`, `unlabeled`, `eval_data` are source specs; with `labeled_per_class` N, only N
  images per class of `labeled` keep their labels (seed `split_seed`) and the rest of it is the
  unlabeled data (then `unlabeled` must be unset).  `num_classes`, `scan_records`: the class
  count of tfrecord: sources, given or scanned once (cached in W/data/source_stats); `flip`:
  random horizontal flips in training (off for digits).
  Models: `models` names one model per generation (generation 0 is the teacher); a single name is
  used for every generation; `widths` / `depths` (one value, or one per generation) override the
  named scaling; `resolution`, `small_image` apply to all.  `generations`: student rounds.
  `teacher_model_dir`: use this trained model as generation 0 instead of training one.
  Training (both): batch_size (labeled images per step), optimizer, base_learning_rate (per 256
  labeled images), lr_schedule (lr_decay_epochs, lr_decay_factor for 'exponential'), warmup_epochs, weight_decay, label_smoothing, ema_decay, precision,
  jit_compile, strategy, seed, checkpoint_every.
  Teacher: teacher_steps or teacher_epochs (over the labeled data), teacher_dropout,
  teacher_drop_path_rate, teacher_randaug_layers / _magnitude.
  Student: student_steps or student_epochs (over the filtered pseudo-labeled set),
  unlabeled_ratio (pseudo rows per labeled row), student_dropout, student_drop_path_rate,
  student_randaug_layers / _magnitude, student_learning_rate (default base_learning_rate),
  student_init_from_teacher (start from the teacher's weights instead of from scratch).
  Labels: label_type, temperature, top_k, label_shards, label_batch_size.
  Filter: threshold, per_class (K; None: no balancing), duplicate, filter_shards.
  Images: max_image_pixels (height x width by the header; larger images are skipped by the labeler
  and stop a training run, before decoding; 0: no limit).
  """
  work_dir: str
  labeled: str
  eval_data: str
  unlabeled: Optional[str] = None
  labeled_per_class: Optional[int] = None
  split_seed: int = 0
  data_dir: Optional[str] = None
  label_offset: int = 0
  num_classes: Optional[int] = None
  scan_records: bool = True
  flip: bool = True
  models: Tuple[str, ...] = ('efficientnet-b0',)
  generations: int = 1
  widths: Optional[Tuple[float, ...]] = None
  depths: Optional[Tuple[float, ...]] = None
  resolution: Optional[int] = None
  small_image: bool = False
  teacher_model_dir: Optional[str] = None
  batch_size: int = 64
  eval_batch_size: int = 256
  optimizer: str = 'momentum'
  base_learning_rate: float = 0.1
  lr_schedule: str = 'cosine'
  lr_decay_epochs: float = 2.4
  lr_decay_factor: float = 0.97
  warmup_epochs: float = 1.0
  weight_decay: float = 1e-5
  label_smoothing: float = 0.1
  ema_decay: float = 0.999
  precision: str = 'float32'
  jit_compile: bool = False
  strategy: str = 'default'
  seed: int = 0
  checkpoint_every: int = 500
  progress: str = 'log'
  teacher_steps: Optional[int] = None
  teacher_epochs: Optional[float] = None
  teacher_dropout: Optional[float] = None
  teacher_drop_path_rate: Optional[float] = None
  teacher_randaug_layers: int = 0
  teacher_randaug_magnitude: float = 0
  student_steps: Optional[int] = None
  student_epochs: Optional[float] = None
  unlabeled_ratio: float = 1.0
  student_dropout: Optional[float] = None
  student_drop_path_rate: Optional[float] = None
  student_randaug_layers: int = 2
  student_randaug_magnitude: float = 27
  student_learning_rate: Optional[float] = None
  student_init_from_teacher: bool = False
  label_type: str = 'soft'
  temperature: float = 1.0
  top_k: Optional[int] = None
  label_shards: int = 4
  label_batch_size: int = 256
  threshold: float = 0.3
  per_class: Optional[int] = None
  duplicate: bool = True
  filter_shards: int = 4
  max_image_pixels: int = preprocessing.DEFAULT_MAX_IMAGE_PIXELS

  def validate(self):
    """Raises ValueError naming the first bad field (cheap: nothing is read or trained)."""
    if not self.work_dir:
      raise ValueError('work_dir is required')
    if not self.labeled:
      raise ValueError('labeled is required: a labeled source spec such as folder:PATH')
    if not self.eval_data:
      raise ValueError('eval_data is required: a labeled test source spec')
    if self.labeled_per_class is not None:
      if self.unlabeled:
        raise ValueError('give either unlabeled or labeled_per_class (which makes the rest of '
                         f'labeled the unlabeled data), not both; got unlabeled={self.unlabeled!r}')
      if not (isinstance(self.labeled_per_class, int) and self.labeled_per_class >= 1):
        raise ValueError(f'labeled_per_class must be an integer >= 1, got {self.labeled_per_class!r}')
    elif not self.unlabeled:
      raise ValueError('unlabeled is required (a source spec), or labeled_per_class to split '
                       'labeled')
    if not (isinstance(self.generations, int) and self.generations >= 1):
      raise ValueError(f'generations must be an integer >= 1, got {self.generations!r}')
    n = self.generations + 1
    for name in ('models', 'widths', 'depths'):
      value = getattr(self, name)
      if value is not None and len(value) not in (1, n):
        raise ValueError(f'{name} needs 1 value or one per generation including the teacher '
                         f'({n} for generations={self.generations}), got {len(value)}: {value!r}')
    if not self.models:
      raise ValueError('models must name at least one model, e.g. efficientnet-b0')
    for g in range(n):
      models.make_config(self.model_name(g), 10, **self.model_overrides(g))  # raises when bad
    if self.teacher_model_dir is None and (self.teacher_steps is None) == (self.teacher_epochs is None):
      raise ValueError(f'give exactly one of teacher_steps and teacher_epochs, got '
                       f'{self.teacher_steps!r} and {self.teacher_epochs!r}')
    if (self.student_steps is None) == (self.student_epochs is None):
      raise ValueError(f'give exactly one of student_steps and student_epochs, got '
                       f'{self.student_steps!r} and {self.student_epochs!r}')
    for name in ('teacher_steps', 'student_steps', 'batch_size', 'label_shards', 'filter_shards',
                 'label_batch_size', 'eval_batch_size'):
      value = getattr(self, name)
      if value is not None and not (isinstance(value, int) and value >= 1):
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    for name in ('teacher_epochs', 'student_epochs'):
      value = getattr(self, name)
      if value is not None and not value > 0:
        raise ValueError(f'{name} must be > 0, got {value!r}')
    if not self.unlabeled_ratio > 0:
      raise ValueError(f'unlabeled_ratio must be > 0, got {self.unlabeled_ratio!r}')
    if self.teacher_model_dir and not model_dir_lib.is_complete(self.teacher_model_dir):
      raise ValueError(f'teacher_model_dir {self.teacher_model_dir!r} is not a complete model dir '
                       '(config.json and final/ema.weights.h5 expected)')
    self.label_config(0).validate()
    self.filter_config(0).validate()

  def model_name(self, generation):
    """The model name of `generation` (0 = teacher)."""
    return self.models[generation if len(self.models) > 1 else 0]

  def model_overrides(self, generation):
    """EfficientNetConfig overrides of `generation`'s model."""
    out = {'small_image': self.small_image}
    if self.resolution is not None:
      out['resolution'] = self.resolution
    for name, values in (('width', self.widths), ('depth', self.depths)):
      if values:
        out[name] = values[generation if len(values) > 1 else 0]
    return out

  def gen_dir(self, generation):
    """W/gen<g>."""
    return os.path.join(self.work_dir, f'gen{generation}')

  def model_dir(self, generation):
    """The model dir of `generation` (the given teacher for generation 0 when set)."""
    if generation == 0 and self.teacher_model_dir:
      return self.teacher_model_dir
    return os.path.join(self.gen_dir(generation), 'model')

  def label_config(self, generation):
    """ns-label's settings for the pseudo-labels made by `generation`'s model."""
    return label_lib.LabelConfig(
        model_dir=self.model_dir(generation), unlabeled=self.unlabeled_spec(),
        output_dir=os.path.join(self.gen_dir(generation), 'pseudo'), label_type=self.label_type,
        temperature=self.temperature, top_k=self.top_k, num_shards=self.label_shards,
        batch_size=self.label_batch_size, generation=generation, data_dir=self.data_dir,
        label_offset=self.label_offset, max_image_pixels=self.max_image_pixels)

  def filter_config(self, generation):
    """ns-filter's settings for `generation`'s pseudo-labels."""
    return filter_lib.FilterConfig(
        input=os.path.join(self.gen_dir(generation), 'pseudo'),
        output_dir=os.path.join(self.gen_dir(generation), 'balanced'), threshold=self.threshold,
        per_class=self.per_class, duplicate=self.duplicate, num_shards=self.filter_shards,
        seed=self.seed + generation)

  def source_cache_dir(self):
    """W/data/source_stats: the cached label scans of record sources."""
    return os.path.join(self.work_dir, 'data', 'source_stats')

  def split_dir(self):
    """W/data: the written labeled / unlabeled split."""
    return os.path.join(self.work_dir, 'data')

  def labeled_spec(self):
    """The labeled source every generation trains on."""
    if self.labeled_per_class is None:
      return self.labeled
    return split_lib.labeled_spec(self.split_dir())

  def unlabeled_spec(self):
    """The unlabeled source every teacher labels."""
    if self.labeled_per_class is None:
      return self.unlabeled
    return split_lib.unlabeled_spec(self.split_dir())


def _train_config(config: PipelineConfig, generation, num_pseudo=None):
  """The ns-train settings of `generation` (0 = teacher on labels only)."""
  from noisy_student_tf.train import trainer  # pylint: disable=g-import-not-at-top
  overrides = config.model_overrides(generation)
  common = dict(
      model_dir=config.model_dir(generation), labeled=config.labeled_spec(),
      eval_data=config.eval_data, data_dir=config.data_dir, label_offset=config.label_offset,
      num_classes=config.num_classes, scan_records=config.scan_records,
      source_cache_dir=config.source_cache_dir(), flip=config.flip,
      model=config.model_name(generation), width=overrides.get('width'),
      depth=overrides.get('depth'), resolution=overrides.get('resolution'),
      small_image=config.small_image, batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size, optimizer=config.optimizer,
      lr_schedule=config.lr_schedule, lr_decay_epochs=config.lr_decay_epochs,
      lr_decay_factor=config.lr_decay_factor, warmup_epochs=config.warmup_epochs,
      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
      ema_decay=config.ema_decay, precision=config.precision, jit_compile=config.jit_compile,
      strategy=config.strategy, seed=config.seed + 1000 * generation,
      checkpoint_every=config.checkpoint_every, log_every=max(1, min(100, config.checkpoint_every)),
      progress=config.progress, max_image_pixels=config.max_image_pixels)
  if generation == 0:
    return trainer.TrainConfig(
        **common, train_steps=config.teacher_steps, epochs=config.teacher_epochs,
        base_learning_rate=config.base_learning_rate, dropout=config.teacher_dropout,
        drop_path_rate=config.teacher_drop_path_rate,
        randaug_layers=config.teacher_randaug_layers,
        randaug_magnitude=config.teacher_randaug_magnitude)
  steps = config.student_steps
  if steps is None:
    pseudo_rows = max(1, int(round(config.unlabeled_ratio * config.batch_size)))
    steps = max(1, int(math.ceil(config.student_epochs * num_pseudo / pseudo_rows)))
  balanced = os.path.join(config.gen_dir(generation - 1), 'balanced')
  return trainer.TrainConfig(
      **common, train_steps=steps, pseudo='pseudo:' + os.path.join(balanced, '*.tfrecord'),
      unlabeled_ratio=config.unlabeled_ratio,
      base_learning_rate=config.student_learning_rate or config.base_learning_rate,
      dropout=config.student_dropout, drop_path_rate=config.student_drop_path_rate,
      randaug_layers=config.student_randaug_layers,
      randaug_magnitude=config.student_randaug_magnitude,
      init_checkpoint=config.model_dir(generation - 1) if config.student_init_from_teacher else None)


def check_student(teacher_dir, student_config, pseudo_classes=None):
  """Checks a student against its teacher before training it.

  teacher_dir: the teacher's model dir.  student_config: the student's EfficientNetConfig.
  pseudo_classes: the class count of the pseudo-labels (default: the teacher's).
  Raises ValueError when the class counts differ; warns (and returns False) when the student has
  fewer parameters than the teacher (the paper's student is equal or larger).  Returns True
  otherwise.
  """
  teacher = model_dir_lib.read_config(teacher_dir).model
  classes = teacher.num_classes if pseudo_classes is None else pseudo_classes
  if student_config.num_classes != classes or teacher.num_classes != classes:
    raise ValueError(f'the student has {student_config.num_classes} classes but its teacher '
                     f'{teacher_dir!r} has {teacher.num_classes} (pseudo-labels: {classes}); '
                     'they must be equal')
  t_params = models.profile(teacher).params
  s_params = models.profile(student_config).params
  if s_params < t_params:
    msg = (f'the student {student_config.name} (width {student_config.width}, depth '
           f'{student_config.depth}: {s_params:,} parameters) is smaller than its teacher '
           f'{teacher.name} ({t_params:,}); the paper uses an equal or larger student')
    warnings.warn(msg)
    logging.warning('%s', msg)
    return False
  return True


def _times(config):
  return shards.read_json(os.path.join(config.work_dir, TIMES_FILE)) or {}


def _record_time(config, stage, seconds):
  times = _times(config)
  times[stage] = round(times.get(stage, 0.0) + seconds, 3)
  shards.write_json(os.path.join(config.work_dir, TIMES_FILE), times)


def _train_stage(config, generation, num_pseudo=None):
  """Trains and evaluates `generation` unless done; returns its eval dict."""
  from noisy_student_tf.evaluate import evaluator  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.train import trainer  # pylint: disable=g-import-not-at-top
  eval_path = os.path.join(config.gen_dir(generation), 'eval.json')
  done = shards.read_json(eval_path)
  if done is not None:
    return done
  model_dir = config.model_dir(generation)
  start = time.time()
  result = {}
  if not model_dir_lib.is_complete(model_dir):
    train_config = _train_config(config, generation, num_pseudo)
    if generation > 0:
      student = models.make_config(config.model_name(generation),
                                   model_dir_lib.read_config(config.model_dir(0)).model.num_classes,
                                   **config.model_overrides(generation))
      check_student(config.model_dir(generation - 1), student)
    logging.info('ns-pipeline: training generation %d (%s) for %s steps', generation,
                 train_config.model, train_config.train_steps or f'{train_config.epochs} epochs of')
    result = trainer.train(train_config)
    _record_time(config, f'gen{generation}/train', time.time() - start)
  if 'top1' not in result:
    result = evaluator.evaluate_model_dir(model_dir, config.eval_data, data_dir=config.data_dir,
                                          label_offset=config.label_offset,
                                          batch_size=config.eval_batch_size)
  ev = {'top1': result['top1'], 'top5': result['top5'],
        'num_examples': result.get('num_eval_examples', result.get('num_examples'))}
  shards.write_json(eval_path, ev)
  return ev


def _label_filter_stage(config, generation):
  """Labels with `generation`'s model and filters, unless done; returns (label, filter) stats."""
  lc, fc = config.label_config(generation), config.filter_config(generation)
  if not label_lib.is_complete(lc.output_dir):
    start = time.time()
    label_lib.label(lc)
    _record_time(config, f'gen{generation}/label', time.time() - start)
  label_stats = shards.read_json(os.path.join(lc.output_dir, shards.STATS_FILE))
  if not filter_lib.is_complete(fc.output_dir):
    start = time.time()
    filter_lib.filter_records(fc)
    _record_time(config, f'gen{generation}/filter', time.time() - start)
  filter_stats = shards.read_json(os.path.join(fc.output_dir, shards.STATS_FILE))
  return label_stats, filter_stats


def _model_label(config, generation):
  overrides = config.model_overrides(generation)
  extra = ''.join(f' {k[0]}{overrides[k]}' for k in ('width', 'depth') if k in overrides)
  return config.model_name(generation).replace('efficientnet-', '') + extra


def _write_report(config, rows):
  from noisy_student_tf.selftrain import plots  # pylint: disable=g-import-not-at-top
  shards.write_json(os.path.join(config.work_dir, REPORT_JSON), rows)
  lines = ['| generation | model | top-1 | top-5 | pseudo-labels (unique) | pseudo-label '
           'accuracy | seconds |', '|---|---|---|---|---|---|---|']
  for r in rows:
    acc = r.get('pseudo_label_accuracy')
    lines.append(f'| {r["generation"]} | {r["model"]} | {100 * r["top1"]:.2f}% | '
                 f'{100 * r["top5"]:.2f}% | {r["num_pseudo_labels"]} '
                 f'({r.get("num_unique_pseudo_labels", 0)}) | '
                 f'{"-" if acc is None else f"{100 * acc:.1f}%"} | {r["seconds"]:.0f} |')
  model_dir_lib.atomic_write_text(os.path.join(config.work_dir, REPORT_MD), '\n'.join(lines) + '\n')
  plots.pipeline_plot(rows, os.path.join(config.work_dir, REPORT_PNG))
  return '\n'.join(lines)


def _check_same_run(config):
  """Refuses a work dir started with other data or models; writes pipeline_config.json."""
  path = os.path.join(config.work_dir, CONFIG_FILE)
  previous = shards.read_json(path)
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  keys = ('labeled', 'unlabeled', 'eval_data', 'labeled_per_class', 'split_seed', 'models',
          'widths', 'depths', 'resolution', 'small_image', 'teacher_model_dir')
  if previous is not None:
    diff = {k: (previous.get(k), current[k]) for k in keys if previous.get(k) != current[k]}
    if diff:
      raise ValueError(f'work_dir {config.work_dir!r} was started with other settings {diff} '
                       '(old, new); use another work_dir')
  shards.write_json(path, current)


def run_pipeline(config: PipelineConfig) -> list:
  """Runs (or resumes) the whole method as `config` says.

  Returns the report rows (also W/report.json): one dict per generation with generation, model,
  top1, top5, num_pseudo_labels, seconds and more.  Raises ValueError for bad settings, mismatched
  class counts or an empty unlabeled source before any training.
  """
  config.validate()
  os.makedirs(config.work_dir, exist_ok=True)
  _check_same_run(config)
  if config.labeled_per_class is not None:
    start = time.time()
    if not split_lib.is_complete(config.split_dir()):
      info = split_lib.write_split(config.labeled, config.split_dir(), config.labeled_per_class,
                                   config.split_seed, config.data_dir, config.label_offset)
      _record_time(config, 'split', time.time() - start)
      logging.info('ns-pipeline: split %s: %d labeled, %d unlabeled', config.labeled,
                   info['num_labeled'], info['num_unlabeled'])
  _check_sources(config)
  rows = []
  num_pseudo = None
  for g in range(config.generations + 1):
    ev = _train_stage(config, g, num_pseudo)
    times = _times(config)
    row = {'generation': g, 'model': _model_label(config, g), 'top1': ev['top1'],
           'top5': ev['top5'], 'num_pseudo_labels': 0, 'num_unique_pseudo_labels': 0,
           'pseudo_label_accuracy': None,
           'train_seconds': times.get(f'gen{g}/train', 0.0)}
    if g > 0:
      row.update(num_pseudo_labels=filter_stats['num_output'],
                 num_unique_pseudo_labels=filter_stats['num_unique_kept'],
                 pseudo_label_accuracy=label_stats.get('accuracy_against_source_labels'),
                 label_seconds=times.get(f'gen{g - 1}/label', 0.0),
                 filter_seconds=times.get(f'gen{g - 1}/filter', 0.0))
    row['seconds'] = round(row['train_seconds'] + row.get('label_seconds', 0.0) +
                           row.get('filter_seconds', 0.0) + (times.get('split', 0.0) if g == 0
                                                             else 0.0), 1)
    rows.append(row)
    table = _write_report(config, rows)
    logging.info('ns-pipeline: generation %d (%s): top-1 %.2f%%', g, row['model'], 100 * row['top1'])
    if g < config.generations:
      label_stats, filter_stats = _label_filter_stage(config, g)
      num_pseudo = filter_stats['num_output']
      if num_pseudo == 0:
        raise ValueError(f'no pseudo-label of generation {g} passed the threshold {config.threshold}; '
                         'lower threshold')
  logging.info('ns-pipeline report:\n%s', table)
  return rows


def _check_sources(config):
  """Fails early: class counts of teacher, data and eval data; an empty unlabeled source."""
  from noisy_student_tf.data import record_stats, sources  # pylint: disable=g-import-not-at-top
  labeled = sources.open_source(config.labeled_spec(), data_dir=config.data_dir,
                                label_offset=config.label_offset)
  labeled = record_stats.describe(labeled, label_offset=config.label_offset,
                                  num_classes=config.num_classes,
                                  cache_dir=config.source_cache_dir(), scan=config.scan_records)
  if config.teacher_model_dir:
    teacher_classes = model_dir_lib.read_config(config.teacher_model_dir).model.num_classes
    if labeled.num_classes is not None and teacher_classes != labeled.num_classes:
      raise ValueError(f'the teacher {config.teacher_model_dir!r} has {teacher_classes} classes but '
                       f'the labeled data {config.labeled_spec()!r} (the students\' classes) has '
                       f'{labeled.num_classes}')
  label_lib.open_unlabeled(config.unlabeled_spec(), data_dir=config.data_dir,
                           label_offset=config.label_offset)
