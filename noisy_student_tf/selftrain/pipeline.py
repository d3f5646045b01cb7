"""ns-pipeline's library: Noisy Student end to end, stage by stage, resumable anywhere.

  generation 0:  train the teacher on the labeled data (or take a given teacher model dir)
  generation g:  label the unlabeled data with the generation g-1 model (un-noised), filter and
                 balance, train a noised, equal-or-larger student on labeled + pseudo-labeled
                 data; the student is the next teacher.

Work dir layout (every stage is skipped when its outputs are complete, and the stages that can
be interrupted resume on their own: the trainer from its checkpoints, the labeler by shard; a
stage made with other settings stops the rerun, see stages.py and --restart_from):

  W/pipeline_config.json   the settings of the run (the whole PipelineConfig tree)
  W/stages/<stage>.json    what each stage was made with (its fingerprint)
  W/data/                  the labeled / unlabeled split (only with labeled_per_class)
  W/gen<g>/model/          the generation's model dir (ns-train)
  W/gen<g>/eval.json       its test accuracy
  W/gen<g>/pseudo/         its pseudo-labels of the unlabeled data (ns-label)
  W/gen<g>/balanced/       the filtered, balanced pseudo-labels (ns-filter): gen g+1's data
  W/gen<g>/controls/<c>/   with --controls: control student c of generation g (model/,
                           eval.json; selftrain/controls.py)
  W/gen<g>/gallery/        pictures of its pseudo-labels (selftrain/pseudo_gallery.py), linked
                           from report.md
  W/report.json|.md|.png   one row per generation: generation, model, top1, top5,
                           num_pseudo_labels, seconds (+ stage times, label quality and the
                           controls' top-1)
"""

import dataclasses
import logging
import os
import socket
import time
import warnings
from typing import Any, Dict, Optional, Tuple

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf import settings
from noisy_student_tf.selftrain import controls as controls_lib
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pseudo_gallery
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain import split as split_lib
from noisy_student_tf.selftrain import stages
from noisy_student_tf.selftrain.beam import runner_settings
from noisy_student_tf.settings import setting
from noisy_student_tf.train import trainer

REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
REPORT_PNG = 'report.png'
CONFIG_FILE = 'pipeline_config.json'
TIMES_FILE = 'stage_seconds.json'


# TrainConfig fields the pipeline sets per generation (from models / widths / depths and the work
# dir), never taken from the teacher or student settings.
PIPELINE_OWNED = ('model_dir', 'pseudo', 'model', 'width', 'depth', 'source_cache_dir')
# TrainConfig fields with one value for every stage (data, labels, image limits, determinism):
# set on the teacher (--X), never per student.
SHARED_ONLY = ('labeled', 'eval_data', 'data_dir', 'label_offset', 'num_classes', 'scan_records',
               'max_image_pixels', 'deterministic')
# LabelConfig / FilterConfig fields the pipeline fills per generation.
LABEL_OWNED = ('model_dir', 'output_dir', 'shard_index', 'generation', 'data_dir', 'label_offset',
               'max_image_pixels', 'runner', 'beam_options')
FILTER_OWNED = ('input', 'output_dir', 'num_classes', 'runner', 'beam_options')
# What a student changes from the teacher's settings unless told otherwise: the paper's noise
# (RandAugment 2 ops at magnitude 27) and a length in passes over the pseudo-labeled set.
STUDENT_DEFAULTS = {'randaug_layers': 2, 'randaug_magnitude': 27.0, 'epochs_over': 'pseudo'}
_LENGTH = ('train_steps', 'epochs')


def default_train_settings():
  """The pipeline's training defaults (small-run friendly; the recipes set the paper's)."""
  return trainer.TrainConfig(batch_size=64, optimizer='momentum', base_learning_rate=0.1,
                             lr_schedule='cosine', warmup_epochs=1.0, ema_decay=0.999,
                             checkpoint_every=500, progress='log')


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every setting of one ns-pipeline run, as a tree.

  teacher: a TrainConfig for generation 0, whose data fields (labeled, eval_data, data_dir,
    label_offset, num_classes, scan_records, max_image_pixels) hold for every stage; its
    model_dir / pseudo / model / width / depth are set by the pipeline (leave them default).
  student: {TrainConfig field: value} overrides of the teacher's settings for every student, on
    top of STUDENT_DEFAULTS (give a value to change one of those); a student train_steps or
    epochs replaces the teacher's length.
  label: the LabelConfig of every labeling; its `unlabeled` is the unlabeled source (unset with
    labeled_per_class); model_dir, output_dir, generation and the data fields are filled per
    generation.  filter: the FilterConfig of every filtering (input,
    output_dir, num_classes filled; seed + generation).
  The other fields: below, with their help (settings.help_of).
  """
  work_dir: str = setting('', "Where every generation's model, pseudo-labels and the report go "
                          '(rerun the same command to resume).')
  labeled_per_class: Optional[int] = setting(None, 'Keep the labels of only this many images per '
                                             'class of --labeled; the rest of it becomes the '
                                             'unlabeled data.')
  split_seed: int = setting(0, 'Seed of the labeled/unlabeled split.')
  models: Tuple[str, ...] = setting(('efficientnet-b0',), 'Model per generation, teacher first '
                                    '(e.g. b0,b0,b1); one name is used for all.')
  generations: int = setting(1, 'Student rounds after the teacher.')
  widths: Optional[Tuple[float, ...]] = setting(None, 'Width multiplier per generation (or one '
                                                "for all); default: the named model's.")
  depths: Optional[Tuple[float, ...]] = setting(None, 'Depth multiplier per generation (or one '
                                                "for all); default: the named model's.")
  teacher_model_dir: Optional[str] = setting(None, 'Use this trained model dir as the '
                                             'generation-0 teacher instead of training one.')
  student_init_from_teacher: bool = setting(False, "Start each student from its teacher's "
                                            'weights instead of from scratch.')
  filter_once: bool = setting(False, 'Filter and balance once, with the first teacher (the '
                              'official procedure): every later teacher re-labels that fixed '
                              'balanced set and its student trains on all of it. Off: every '
                              'teacher labels the whole unlabeled set, filtered anew.')
  label_runner: str = setting('local', 'Where the label and filter stages run: local (in this '
                              'process) or beam (as Apache Beam pipelines: ns-label / ns-filter '
                              '--runner=beam, with --label_beam_options).',
                              choices=runner_settings.RUNNERS, result=False)
  label_beam_options: str = runner_settings.beam_options_setting('--label_runner=beam')
  controls: Tuple[str, ...] = setting((), 'Control students trained beside every student, with '
                                      'its init, seed, steps, rows per step and schedule: '
                                      'labeled_only (no pseudo-labels), no_noise (no '
                                      'RandAugment, dropout, stochastic depth); their top-1 '
                                      "goes into the report beside the student's.")
  control_generations: Tuple[int, ...] = setting((), 'The generations whose students get the '
                                                 '--controls (e.g. 2: only the second '
                                                 "student's); default: every generation.",
                                                 result=False)
  gallery_classes: int = setting(pseudo_gallery.DEFAULT_MAX_CLASSES, "Classes shown in each "
                                 "generation's pseudo-label gallery (the first N; 0: none).",
                                 result=False)
  teacher: trainer.TrainConfig = setting(default_factory=default_train_settings)
  student: Dict[str, Any] = setting(default_factory=lambda: dict(STUDENT_DEFAULTS))
  label: label_lib.LabelConfig = setting(default_factory=lambda: label_lib.LabelConfig(
      num_shards=4, progress='log'))
  filter: filter_lib.FilterConfig = setting(default_factory=lambda: filter_lib.FilterConfig(
      num_shards=4, progress='log'))

  @property
  def labeled(self):
    """The labeled source spec the user gave (before any labeled_per_class split)."""
    return self.teacher.labeled

  @property
  def unlabeled(self):
    """The unlabeled source spec the user gave (label.unlabeled; unset with labeled_per_class)."""
    return self.label.unlabeled or None

  @property
  def eval_data(self):
    """The labeled test source every generation is scored on."""
    return self.teacher.eval_data

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
    if not (isinstance(self.gallery_classes, int) and self.gallery_classes >= 0):
      raise ValueError(f'gallery_classes must be an integer >= 0 (0: no gallery), got '
                       f'{self.gallery_classes!r}')
    n = self.generations + 1
    for name in ('models', 'widths', 'depths'):
      value = getattr(self, name)
      if value is not None and len(value) not in (1, n):
        raise ValueError(f'{name} needs 1 value or one per generation including the teacher '
                         f'({n} for generations={self.generations}), got {len(value)}: {value!r}')
    if not self.models:
      raise ValueError('models must name at least one model, e.g. efficientnet-b0')
    controls_lib.check_names(self.controls)
    bad = [g for g in self.control_generations
           if not (isinstance(g, int) and 1 <= g <= self.generations)]
    if bad:
      raise ValueError(f'control_generations must name student generations 1..{self.generations}'
                       f' (generations={self.generations}), got {bad[0]!r}')
    self._check_templates()
    if self.teacher_model_dir and not model_dir_lib.is_complete(self.teacher_model_dir):
      raise ValueError(f'teacher_model_dir {self.teacher_model_dir!r} is not a complete model dir '
                       '(config.json and final/ema.weights.h5 expected)')
    for g in range(n):
      if g == 0 and self.teacher_model_dir:
        continue
      config = self.train_config(g, num_classes_known=False)
      try:
        config.validate()
      except ValueError as e:
        raise ValueError(f'{"teacher" if g == 0 else "student"} (generation {g}): {e}') from None
    self.label_config(0).validate()
    self.filter_config(0).validate()

  def _check_templates(self):
    defaults = trainer.TrainConfig()
    for name in PIPELINE_OWNED:
      if getattr(self.teacher, name) != getattr(defaults, name):
        raise ValueError(f'teacher.{name} is set by the pipeline per generation (models, widths, '
                         f'depths, work_dir); got {getattr(self.teacher, name)!r}')
    fields = {f.name for f in dataclasses.fields(trainer.TrainConfig)}
    for name in self.student:
      if name not in fields:
        raise ValueError(f'student.{name} is not a training setting (TrainConfig fields: '
                         f'{sorted(fields)})')
      if name in PIPELINE_OWNED or name in SHARED_ONLY:
        raise ValueError(f'student.{name} cannot differ from the teacher\'s: it is '
                         f'{"set by the pipeline" if name in PIPELINE_OWNED else "one value for every stage"}')
    if self.student_init_from_teacher and self.student.get('init_checkpoint'):
      raise ValueError('give student_init_from_teacher or student.init_checkpoint, not both')
    for cls, template, owned in ((label_lib.LabelConfig, self.label, LABEL_OWNED),
                                 (filter_lib.FilterConfig, self.filter, FILTER_OWNED)):
      blank = cls()
      for name in owned:
        if getattr(template, name) != getattr(blank, name):
          raise ValueError(f'{cls.__name__}.{name} is set by the pipeline; got '
                           f'{getattr(template, name)!r}')

  def model_name(self, generation):
    """The model name of `generation` (0 = teacher)."""
    return self.models[generation if len(self.models) > 1 else 0]

  def model_overrides(self, generation):
    """EfficientNetConfig overrides of `generation`'s model."""
    return self.train_config(generation, num_classes_known=False).model_overrides()

  def gen_dir(self, generation):
    """W/gen<g>."""
    return os.path.join(self.work_dir, f'gen{generation}')

  def model_dir(self, generation):
    """The model dir of `generation` (the given teacher for generation 0 when set)."""
    if generation == 0 and self.teacher_model_dir:
      return self.teacher_model_dir
    return os.path.join(self.gen_dir(generation), 'model')

  def eval_path(self, generation):
    """W/gen<g>/eval.json: the generation's test accuracy."""
    return os.path.join(self.gen_dir(generation), 'eval.json')

  def controls_of(self, generation):
    """The control names trained beside `generation`'s student (a tuple, maybe empty)."""
    if self.control_generations and generation not in self.control_generations:
      return ()
    return tuple(self.controls)

  def control_dir(self, generation, name):
    """W/gen<g>/controls/<name>: control `name` of generation `generation`'s student."""
    return os.path.join(self.gen_dir(generation), 'controls', name)

  def control_eval_path(self, generation, name):
    """W/gen<g>/controls/<name>/eval.json: the control's test accuracy."""
    return os.path.join(self.control_dir(generation, name), 'eval.json')

  def control_config(self, generation, name, steps):
    """The TrainConfig of control `name` of generation `generation` (>= 1), trained for `steps`
    (its student's step count) into W/gen<g>/controls/<name>/model."""
    return controls_lib.control_train_config(
        self.train_config(generation), name, steps,
        os.path.join(self.control_dir(generation, name), 'model'))

  def role_settings(self, generation):
    """The TrainConfig template of `generation`: the teacher's, or it with the student's
    overrides (a student length given replaces the teacher's)."""
    if generation == 0:
      return self.teacher
    overrides = {**STUDENT_DEFAULTS, **self.student}
    if any(k in self.student for k in _LENGTH):
      for k in _LENGTH:
        overrides.setdefault(k, None)
    return dataclasses.replace(self.teacher, **overrides)

  def train_config(self, generation, num_classes_known=True):
    """The ns-train settings of `generation` (0 = teacher on labels only).

    num_classes_known=False gives a config for validation before the teacher exists (a student's
    init from its teacher is left out)."""
    base = self.role_settings(generation)
    per_gen = {}
    for name, values in (('width', self.widths), ('depth', self.depths)):
      if values:
        per_gen[name] = values[generation if len(values) > 1 else 0]
    init = base.init_checkpoint
    if generation > 0 and self.student_init_from_teacher:
      init = self.model_dir(generation - 1) if num_classes_known else None
    pseudo = None
    if generation > 0:
      pseudo = 'pseudo:' + os.path.join(self.pseudo_dir(generation), '*.tfrecord')
    return dataclasses.replace(
        base, model_dir=self.model_dir(generation), labeled=self.labeled_spec(),
        model=self.model_name(generation), source_cache_dir=self.source_cache_dir(),
        seed=base.seed + 1000 * generation, pseudo=pseudo, init_checkpoint=init, **per_gen)

  def label_config(self, generation):
    """ns-label's settings for the pseudo-labels made by `generation`'s model."""
    return dataclasses.replace(
        self.label, model_dir=self.model_dir(generation), unlabeled=self.label_source(generation),
        output_dir=os.path.join(self.gen_dir(generation), 'pseudo'), generation=generation,
        data_dir=self.teacher.data_dir, label_offset=self.teacher.label_offset,
        max_image_pixels=self.teacher.max_image_pixels, runner=self.label_runner,
        beam_options=self.label_beam_options)

  def label_source(self, generation):
    """What `generation`'s model labels: the unlabeled data, or with filter_once (generation >= 1)
    the balanced set the first teacher's pseudo-labels were filtered into."""
    if self.filter_once and generation >= 1:
      return 'pseudo:' + os.path.join(self.gen_dir(0), 'balanced', '*.tfrecord')
    return self.unlabeled_spec()

  def pseudo_dir(self, generation):
    """The records the student of generation `generation` (>= 1) trains on: its teacher's
    balanced pseudo-labels, or with filter_once its teacher's re-labeling of the fixed set."""
    teacher = generation - 1
    name = 'pseudo' if self.filter_once and teacher >= 1 else 'balanced'
    return os.path.join(self.gen_dir(teacher), name)

  def filter_config(self, generation):
    """ns-filter's settings for `generation`'s pseudo-labels."""
    return dataclasses.replace(
        self.filter, input=os.path.join(self.gen_dir(generation), 'pseudo'),
        output_dir=os.path.join(self.gen_dir(generation), 'balanced'),
        seed=self.filter.seed + generation, runner=self.label_runner,
        beam_options=self.label_beam_options)

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

  def flag_of(self, stage, name):
    """The ns-pipeline flag that sets setting `name` of `stage` (a stages.stage_ids entry)."""
    kind = stage.split('/')[-1]
    if kind == 'split' or name in SHARED_ONLY:
      return f'--{name}'
    if stages.is_control(stage):
      return '--controls'
    if kind == 'train':
      if name in ('model', 'width', 'depth', 'teacher_model_dir'):
        return f'--{name}s' if name != 'teacher_model_dir' else f'--{name}'
      if name == 'init_checkpoint' and stage != 'gen0/train' and self.student_init_from_teacher:
        return '--student_init_from_teacher'
      return f'--{"teacher" if stage == "gen0/train" else "student"}.{name}'
    if kind == 'label' and name == 'unlabeled':
      return '--unlabeled'
    return f'--{kind}.{name}'

  def to_json(self):
    """The whole tree as JSON values (pipeline_config.json)."""
    return settings.to_json(self)

  @classmethod
  def from_json(cls, values):
    """The inverse of to_json (e.g. of a work dir's pipeline_config.json)."""
    return settings.from_json(cls, values)


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


def _evaluate(config, model_dir):
  """Scores `model_dir` on the run's eval data with the teacher's data and batch settings;
  returns evaluator.evaluate_model_dir's dict."""
  from noisy_student_tf.evaluate import evaluator  # pylint: disable=g-import-not-at-top
  teacher = config.teacher
  return evaluator.evaluate_model_dir(model_dir, config.eval_data, data_dir=teacher.data_dir,
                                      label_offset=teacher.label_offset,
                                      batch_size=teacher.eval_batch_size,
                                      progress=teacher.progress)


def _train_stage(config, generation):
  """Trains and evaluates `generation` unless done; returns its eval dict.

  A finished model whose eval.json scored other eval data (or none) is only re-evaluated."""
  eval_path = config.eval_path(generation)
  done = shards.read_json(eval_path)
  if done is not None and done.get('eval_data', config.eval_data) == config.eval_data:
    return done
  model_dir = config.model_dir(generation)
  start = time.time()
  result = {}
  if not model_dir_lib.is_complete(model_dir):
    stages.record(config, f'gen{generation}/train')
    train_config = config.train_config(generation)
    if generation > 0:
      student = models.make_config(config.model_name(generation),
                                   model_dir_lib.read_config(config.model_dir(0)).model.num_classes,
                                   **config.model_overrides(generation))
      check_student(config.model_dir(generation - 1), student)
    logging.info('ns-pipeline: training generation %d (%s) for %s', generation,
                 train_config.model, f'{train_config.train_steps} steps' if train_config.train_steps
                 else f'{train_config.epochs} epochs over the {train_config.epochs_over} examples')
    result = trainer.train(train_config)
    _record_time(config, f'gen{generation}/train', time.time() - start)
  if 'top1' not in result:
    result = _evaluate(config, model_dir)
  ev = {'top1': result['top1'], 'top5': result['top5'], 'eval_data': config.eval_data,
        'num_examples': result.get('num_eval_examples', result.get('num_examples'))}
  shards.write_json(eval_path, ev)
  return ev


def _student_steps(model_dir):
  """The number of steps the student in `model_dir` trained for (its config.json)."""
  training = model_dir_lib.read_config(model_dir).training
  steps = training.get('effective', {}).get('total_steps') or training.get('train_steps')
  if not steps:
    raise ValueError(f'{model_dir!r}: config.json does not say how many steps it trained for')
  return int(steps)


# A control being trained holds W/gen<g>/controls/<name>/RUNNING (host and pid): another
# process that reaches the same control (ns-pipeline beside ns-pipeline --controls_only) waits
# for its eval.json instead of training it a second time into the same folder.
RUNNING_FILE = 'RUNNING'
WAIT_LOG_SECONDS = 300


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _holder(path):
  """(host, pid) written in the RUNNING file `path`; (None, 0) for an unreadable one."""
  try:
    with open(path) as f:
      host, pid = f.read().split()
    return host, int(pid)
  except (OSError, ValueError):
    return None, 0


def _claim_control(config, generation, name):
  """True when this process may train the control (it now holds the RUNNING file, 'host pid');
  False when another live process holds it: one on this host whose pid runs, or any on another
  host (which this one cannot check: remove the file if that process is gone).  A hold of a
  process of this host that died is taken over."""
  path = os.path.join(config.control_dir(generation, name), RUNNING_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  me = (socket.gethostname(), os.getpid())
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      host, pid = _holder(path)
      if host is not None and (host, pid) != me and (host != me[0] or _pid_alive(pid)):
        return False
      shards.remove_if_exists(path)
      continue
    with os.fdopen(fd, 'w') as f:
      f.write(f'{me[0]} {me[1]}')
    return True


def _control_stage(config, generation, name):
  """Trains and evaluates control `name` of `generation`'s student unless done; returns its eval
  dict (top1, top5, steps).  Waits instead where another live process is training it."""
  eval_path = config.control_eval_path(generation, name)
  done = shards.read_json(eval_path)
  if done is not None:
    return done
  waited = 0.0
  while not _claim_control(config, generation, name):
    if waited % WAIT_LOG_SECONDS == 0:
      logging.info('ns-pipeline: control %s of generation %d is being trained by another process '
                   '(%s); waiting for its eval.json', name, generation,
                   os.path.join(config.control_dir(generation, name), RUNNING_FILE))
    time.sleep(10)
    waited += 10
    done = shards.read_json(eval_path)
    if done is not None:
      return done
  try:
    return _train_control(config, generation, name, eval_path)
  finally:
    shards.remove_if_exists(os.path.join(config.control_dir(generation, name), RUNNING_FILE))


def run_controls(config: PipelineConfig, generation: int) -> dict:
  """Trains only the controls of `generation`'s student (config.controls_of(generation)), e.g.
  in a second process beside the ns-pipeline run that trains the student itself.

  Needs the student started (its config.json says its step count) and its init finished (the
  teacher's model, with student_init_from_teacher or beyond generation 1).  A pipeline run that
  reaches these controls meanwhile waits for them.  Returns {name: eval dict}.  Raises ValueError
  for a generation that is not a student's, one without controls, or a student not started.
  """
  config.validate()
  if not 1 <= generation <= config.generations:
    raise ValueError(f'controls_only must be a student generation 1..{config.generations}, got '
                     f'{generation!r}')
  if not config.controls_of(generation):
    raise ValueError(f'generation {generation} has no controls: give --controls (and include '
                     f'{generation} in --control_generations)')
  stages.check(config)
  if not model_dir_lib.is_complete(config.model_dir(generation - 1)):
    raise ValueError(f'the teacher of generation {generation} ({config.model_dir(generation - 1)})'
                     ' is not finished; run ns-pipeline until its student starts')
  try:
    _student_steps(config.model_dir(generation))
  except (OSError, ValueError) as e:
    raise ValueError(f'the student of generation {generation} has not started '
                     f'({config.model_dir(generation)}: {e}); run ns-pipeline until it does') \
        from None
  return {name: _control_stage(config, generation, name) for name in config.controls_of(generation)}


def _train_control(config, generation, name, eval_path):
  stage = f'gen{generation}/{stages.CONTROL_PREFIX}{name}'
  stages.record(config, stage)
  steps = _student_steps(config.model_dir(generation))
  train_config = config.control_config(generation, name, steps)
  logging.info('ns-pipeline: control %s of generation %d (%s) for %d steps of %d rows', name,
               generation, controls_lib.CONTROLS[name], steps,
               controls_lib.rows_per_step(train_config))
  start = time.time()
  result = trainer.train(train_config)
  if 'top1' not in result:
    result = _evaluate(config, train_config.model_dir)
  _record_time(config, stage, time.time() - start)
  ev = {'top1': result['top1'], 'top5': result['top5'], 'steps': steps,
        'rows_per_step': controls_lib.rows_per_step(train_config), 'eval_data': config.eval_data}
  shards.write_json(eval_path, ev)
  return ev


def _label_filter_stage(config, generation):
  """Labels with `generation`'s model and filters, unless done; returns (label stats, the
  students' data stats: the filter's, or with filter_once after generation 0 the labeler's)."""
  lc, fc = config.label_config(generation), config.filter_config(generation)
  if not label_lib.is_complete(lc.output_dir):
    stages.record(config, f'gen{generation}/label')
    start = time.time()
    label_lib.label(lc)
    _record_time(config, f'gen{generation}/label', time.time() - start)
  label_stats = shards.read_json(os.path.join(lc.output_dir, shards.STATS_FILE))
  if config.filter_once and generation >= 1:  # the fixed balanced set, re-labeled: no filter
    fixed = shards.read_json(os.path.join(config.filter_config(0).output_dir, shards.STATS_FILE))
    return label_stats, {'num_output': label_stats['count'],
                         'num_unique_kept': fixed['num_unique_kept']}
  if not filter_lib.is_complete(fc.output_dir):
    stages.record(config, f'gen{generation}/filter')
    start = time.time()
    filter_lib.filter_records(fc)
    _record_time(config, f'gen{generation}/filter', time.time() - start)
  filter_stats = shards.read_json(os.path.join(fc.output_dir, shards.STATS_FILE))
  return label_stats, filter_stats


def gallery_dir(config, generation):
  """W/gen<g>/gallery: the pictures of generation g's pseudo-labels."""
  return os.path.join(config.gen_dir(generation), 'gallery')


def _gallery_stage(config, generation):
  """Draws the gallery of `generation`'s pseudo-labels unless a finished one made from the same
  records and settings is there (it is redone, not fingerprinted: nothing depends on it)."""
  if config.gallery_classes:
    pseudo_gallery.write_gallery(
        config.label_config(generation).output_dir, gallery_dir(config, generation),
        config.filter.threshold, step=generation, model_dir=config.model_dir(generation),
        truth_spec=config.unlabeled_spec(), max_classes=config.gallery_classes,
        title=f'generation {generation} ({_model_label(config, generation)}): pseudo-labels',
        data_dir=config.teacher.data_dir, label_offset=config.teacher.label_offset)


def _gallery_lines(config, num_generations):
  """report.md's links to the finished galleries of generations 0 .. num_generations - 1."""
  lines = []
  for g in range(num_generations):
    folder = gallery_dir(config, g)
    for name in pseudo_gallery.png_paths(folder):
      path = os.path.relpath(os.path.join(folder, name), config.work_dir)
      lines.append(f'![generation {g}: {name}]({path})')
  return ['', '## Pseudo-labels', ''] + lines if lines else []


def _model_label(config, generation):
  overrides = config.model_overrides(generation)
  extra = ''.join(f' {k[0]}{overrides[k]}' for k in ('width', 'depth') if k in overrides)
  return config.model_name(generation).replace('efficientnet-', '') + extra


def _write_report(config, rows):
  from noisy_student_tf.selftrain import plots  # pylint: disable=g-import-not-at-top
  shards.write_json(os.path.join(config.work_dir, REPORT_JSON), rows)
  names = list(config.controls)
  lines = ['| generation | model | top-1 | top-5 | ' +
           ''.join(f'{n} control top-1 | ' for n in names) +
           'pseudo-labels (unique) | pseudo-label accuracy | seconds |',
           '|---|---|---|---|' + '---|' * len(names) + '---|---|---|']
  for r in rows:
    acc = r.get('pseudo_label_accuracy')
    controls = ''.join(
        f'{100 * r["controls"][n]["top1"]:.2f}% | ' if n in r.get('controls', {}) else '- | '
        for n in names)
    lines.append(f'| {r["generation"]} | {r["model"]} | {100 * r["top1"]:.2f}% | '
                 f'{100 * r["top5"]:.2f}% | {controls}{r["num_pseudo_labels"]} '
                 f'({r.get("num_unique_pseudo_labels", 0)}) | '
                 f'{"-" if acc is None else f"{100 * acc:.1f}%"} | {r["seconds"]:.0f} |')
  model_dir_lib.atomic_write_text(os.path.join(config.work_dir, REPORT_MD),
                                  '\n'.join(lines + _gallery_lines(config, len(rows))) + '\n')
  plots.pipeline_plot(rows, os.path.join(config.work_dir, REPORT_PNG))
  return '\n'.join(lines)


def _forget_times(config, removed_stages):
  times = _times(config)
  kept = {k: v for k, v in times.items() if k not in removed_stages}
  if kept != times:
    shards.write_json(os.path.join(config.work_dir, TIMES_FILE), kept)


def run_pipeline(config: PipelineConfig, restart_from: Optional[str] = None) -> list:
  """Runs (or resumes) the whole method as `config` says.

  restart_from: a stage (stages.stage_ids, or teacher / label / filter / student) to redo with
  every stage after it; the stages before it are kept.  Without it, a stage made with other
  settings than `config`'s stops the run before any work (stages.check).
  Returns the report rows (also W/report.json): one dict per generation with generation, model,
  top1, top5, num_pseudo_labels, seconds and more.  Raises ValueError for bad settings, changed
  settings of a done stage, mismatched class counts or an empty unlabeled source, before any
  training.
  """
  config.validate()
  if config.teacher.deterministic:  # for every stage, also when a rerun starts after training
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.experimental.enable_op_determinism()
  restart = stages.resolve(config, restart_from) if restart_from else None
  stages.check(config, restart)
  os.makedirs(config.work_dir, exist_ok=True)
  stages.adopt_existing(config)
  if restart:
    stages.restart(config, restart)
    _forget_times(config, stages.redone(config, restart))
  shards.write_json(os.path.join(config.work_dir, CONFIG_FILE), config.to_json())
  if config.labeled_per_class is not None:
    start = time.time()
    if not split_lib.is_complete(config.split_dir()):
      stages.record(config, 'split')
      teacher = config.teacher
      info = split_lib.write_split(config.labeled, config.split_dir(), config.labeled_per_class,
                                   config.split_seed, teacher.data_dir, teacher.label_offset)
      _record_time(config, 'split', time.time() - start)
      logging.info('ns-pipeline: split %s: %d labeled, %d unlabeled', config.labeled,
                   info['num_labeled'], info['num_unlabeled'])
  _check_sources(config)
  rows = []
  for g in range(config.generations + 1):
    ev = _train_stage(config, g)
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
      if config.controls_of(g):
        row['controls'] = {name: _control_stage(config, g, name) for name in config.controls_of(g)}
        row['control_seconds'] = round(sum(
            _times(config).get(f'gen{g}/{stages.CONTROL_PREFIX}{n}', 0.0)
            for n in config.controls_of(g)), 1)
    row['seconds'] = round(row['train_seconds'] + row.get('label_seconds', 0.0) +
                           row.get('filter_seconds', 0.0) + (times.get('split', 0.0) if g == 0
                                                             else 0.0), 1)
    rows.append(row)
    table = _write_report(config, rows)
    logging.info('ns-pipeline: generation %d (%s): top-1 %.2f%%', g, row['model'], 100 * row['top1'])
    if g < config.generations:
      label_stats, filter_stats = _label_filter_stage(config, g)
      if filter_stats['num_output'] == 0:
        raise ValueError(f'no pseudo-label of generation {g} passed the threshold '
                         f'{config.filter.threshold}; lower --filter.threshold')
      _gallery_stage(config, g)
  logging.info('ns-pipeline report:\n%s', table)
  return rows


def _check_sources(config):
  """Fails early: class counts of teacher, data and eval data; an empty unlabeled source."""
  from noisy_student_tf.data import record_stats, sources  # pylint: disable=g-import-not-at-top
  teacher = config.teacher
  labeled = sources.open_source(config.labeled_spec(), data_dir=teacher.data_dir,
                                label_offset=teacher.label_offset)
  labeled = record_stats.describe(labeled, label_offset=teacher.label_offset,
                                  num_classes=teacher.num_classes,
                                  cache_dir=config.source_cache_dir(), scan=teacher.scan_records)
  if config.teacher_model_dir:
    teacher_classes = model_dir_lib.read_config(config.teacher_model_dir).model.num_classes
    if labeled.num_classes is not None and teacher_classes != labeled.num_classes:
      raise ValueError(f'the teacher {config.teacher_model_dir!r} has {teacher_classes} classes but '
                       f'the labeled data {config.labeled_spec()!r} (the students\' classes) has '
                       f'{labeled.num_classes}')
  label_lib.open_unlabeled(config.unlabeled_spec(), data_dir=teacher.data_dir,
                           label_offset=teacher.label_offset)
