"""One definition of every setting (issue 14): flags generated from the config dataclasses, every
ns-train setting reachable through ns-pipeline for the teacher and the students, and stage
fingerprints that stop a rerun with changed settings (and --restart_from that redoes a stage)."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from noisy_student_tf import settings
from noisy_student_tf.cli import pipeline as cli
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline, shards, stages
from noisy_student_tf.train import trainer

REPO = pathlib.Path(__file__).resolve().parent.parent
FLAGS = flags.FLAGS


def _parse(args):
  """The PipelineConfig ns-pipeline makes of `args` (the flags are reset afterwards)."""
  try:
    FLAGS(['ns-pipeline', '--work_dir=/tmp/w', '--labeled=digits:train', '--eval_data=digits:test',
           '--unlabeled=digits:test', *args])
    return cli.make_config()
  finally:
    FLAGS.unparse_flags()


def _ns_train_flags():
  """The flags the ns-train binary defines (read in a fresh process: its names clash with
  ns-pipeline's, which this process has imported)."""
  code = ('import json; from absl import flags; import noisy_student_tf.cli.train; '
          'print(json.dumps(sorted(f.name for m, fs in flags.FLAGS.flags_by_module_dict().items() '
          'if m.startswith("noisy_student_tf") for f in fs)))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       timeout=300).stdout
  return json.loads(out.strip().splitlines()[-1])


def _other_value(field, kind):
  """A valid value of `field` different from both the ns-train and the ns-pipeline default."""
  choices = settings.choices_of(field)
  defaults = {field.default, getattr(pipeline.default_train_settings(), field.name),
              pipeline.STUDENT_DEFAULTS.get(field.name)}
  if choices:
    return next((c for c in choices if c not in defaults),
                next(c for c in choices if c != field.default))
  if kind is bool:
    return not field.default
  if kind is int:
    return next(v for v in (7, 11, 13) if v not in defaults)
  if kind is float:
    return next(v for v in (0.37, 0.41) if v not in defaults)
  return f'/somewhere/{field.name}'


# Flags of ns-train that are not training settings of the method's loop: the process setting is
# ns-pipeline's too; FixRes is its own fine-tuning task (ns-train --finetune_resolution), run
# after the pipeline on its result.
NOT_TRAIN_CONFIG = {'num_cpu_devices'}
FIXRES = {f'finetune_{n}' for n in ('resolution', 'epochs', 'steps', 'learning_rate', 'momentum',
                                    'bn_momentum', 'label_smoothing')}


def test_every_ns_train_setting_reaches_teacher_and_student_through_ns_pipeline():
  train_flags = set(_ns_train_flags())
  fields = {f.name: f for f in dataclasses.fields(trainer.TrainConfig)}
  assert train_flags == set(fields) | NOT_TRAIN_CONFIG | FIXRES
  kinds = settings.field_types(trainer.TrainConfig)
  role_fields = [n for n in fields if n not in pipeline.PIPELINE_OWNED + pipeline.SHARED_ONLY]
  teacher_args, student_args, expected_t, expected_s = [], [], {}, {}
  for name in role_fields:
    kind = kinds[name][0]
    t_value = _other_value(fields[name], kind)
    s_value = (next(c for c in settings.choices_of(fields[name]) if c != t_value)
               if settings.choices_of(fields[name]) and len(settings.choices_of(fields[name])) > 2
               else t_value)
    if kind is bool:
      teacher_args.append(f'--teacher.{name}' if t_value else f'--noteacher.{name}')
      s_value = not t_value
      student_args.append(f'--student.{name}' if s_value else f'--nostudent.{name}')
    else:
      if kind in (int, float):
        s_value = t_value * 3
      elif kind is str and not settings.choices_of(fields[name]):
        s_value = t_value + '_s'
      teacher_args.append(f'--teacher.{name}={t_value}')
      student_args.append(f'--student.{name}={s_value}')
    expected_t[name], expected_s[name] = t_value, s_value
  config = _parse(teacher_args + student_args)
  teacher, student = config.train_config(0), config.train_config(1)
  expected_s['seed'] += 1000  # each generation's seed: the given one + 1000 x generation
  for name in role_fields:
    assert getattr(teacher, name) == expected_t[name], name
    assert getattr(student, name) == expected_s[name], name

  # The shared spelling --X sets both; one value for every stage where the method needs one.
  shared = {}
  for name in role_fields + list(pipeline.SHARED_ONLY):
    if name not in ('labeled', 'eval_data', 'train_steps', 'epochs'):
      shared[name] = _other_value(fields[name], kinds[name][0])
  args = [(f'--{n}' if v else f'--no{n}') if kinds[n][0] is bool else f'--{n}={v}'
          for n, v in shared.items()]
  config = _parse(args + ['--train_steps=9'])
  for g in (0, 1):
    got = config.train_config(g)
    for name, value in shared.items():
      assert getattr(got, name) == (value + 1000 * g if name == 'seed' else value), (g, name)
    assert got.train_steps == 9

  # The rest are set by the pipeline per generation: models / widths / depths and the work dir.
  config = _parse(['--models=b0,b1', '--widths=0.25,0.5', '--depths=0.3,0.6', '--train_steps=1',
                   '--labeled_per_class=5', '--unlabeled='])
  teacher, student = config.train_config(0), config.train_config(1)
  assert (teacher.model, teacher.width, teacher.depth) == ('b0', 0.25, 0.3)
  assert (student.model, student.width, student.depth) == ('b1', 0.5, 0.6)
  assert teacher.model_dir == '/tmp/w/gen0/model' and student.model_dir == '/tmp/w/gen1/model'
  assert teacher.pseudo is None and student.pseudo == 'pseudo:/tmp/w/gen0/balanced/*.tfrecord'
  assert teacher.source_cache_dir == student.source_cache_dir == '/tmp/w/data/source_stats'
  assert teacher.labeled == student.labeled == 'folder:/tmp/w/data/labeled'


def test_student_defaults_and_precedence():
  config = _parse(['--train_steps=5'])
  teacher, student = config.train_config(0), config.train_config(1)
  assert (teacher.randaug_layers, student.randaug_layers, student.randaug_magnitude) == (0, 2, 27)
  assert (teacher.epochs_over, student.epochs_over) == ('labeled', 'pseudo')
  # --X given and --student.X not: the given value holds for the students too.
  config = _parse(['--train_steps=5', '--randaug_layers=1'])
  assert config.train_config(0).randaug_layers == config.train_config(1).randaug_layers == 1
  # --teacher.X changes only the teacher; --student.X wins over --X.
  config = _parse(['--train_steps=5', '--dropout=0.3', '--teacher.dropout=0.1',
                   '--student.dropout=0.5'])
  assert (config.train_config(0).dropout, config.train_config(1).dropout) == (0.1, 0.5)
  config = _parse(['--train_steps=5', '--teacher.dropout=0.1'])
  assert (config.train_config(0).dropout, config.train_config(1).dropout) == (0.1, None)
  # A student length replaces the teacher's (steps or epochs, never both).
  config = _parse(['--teacher.train_steps=5', '--student.epochs=2'])
  student = config.train_config(1)
  assert (student.train_steps, student.epochs, student.epochs_over) == (None, 2.0, 'pseudo')
  with pytest.raises(ValueError, match=r'student \(generation 1\): give exactly one of'):
    _parse(['--teacher.train_steps=5']).validate()


def test_each_setting_is_declared_once():
  # The binaries declare no flag by hand beyond the process settings: the rest come from fields.
  hand_made = {}
  for path in sorted((REPO / 'noisy_student_tf' / 'cli').glob('*.py')):
    names = re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", path.read_text())
    if names:
      hand_made[path.name] = names
  assert hand_made == {'config_flags.py': ['num_cpu_devices'],
                       'pipeline.py': ['restart_from', 'controls_only']}
  # The pipeline config nests the stage configs instead of re-declaring their fields.
  own = {f.name for f in dataclasses.fields(pipeline.PipelineConfig)}
  for cls in (trainer.TrainConfig, label_lib.LabelConfig, filter_lib.FilterConfig):
    assert not own & {f.name for f in dataclasses.fields(cls)}, cls
  # Every field of every config has its help text.
  for cls in (trainer.TrainConfig, label_lib.LabelConfig, filter_lib.FilterConfig,
              pipeline.PipelineConfig):
    for f in dataclasses.fields(cls):
      if not dataclasses.is_dataclass(settings.field_types(cls)[f.name][0]) and \
          settings.field_types(cls)[f.name][0] is not dict:
        assert settings.help_of(f), (cls.__name__, f.name)


def test_config_tree_round_trips_through_json():
  config = _parse(['--train_steps=5', '--student.dropout=0.5', '--label.temperature=2',
                   '--filter.per_class=7', '--widths=0.25'])
  again = pipeline.PipelineConfig.from_json(json.loads(json.dumps(config.to_json())))
  assert again == config
  with pytest.raises(ValueError, match="no setting 'bogus'"):
    pipeline.PipelineConfig.from_json({**config.to_json(), 'bogus': 1})


def _recorded(tmp_path, args):
  config = _parse([f'--work_dir={tmp_path}', '--train_steps=5', *args])
  for stage in stages.stage_ids(config):
    stages.record(config, stage)
  return config


@pytest.mark.parametrize('change,stage,flag', [
    (['--filter.threshold=0.5'], 'gen0/filter', '--filter.threshold'),
    (['--label.temperature=2'], 'gen0/label', '--label.temperature'),
    (['--student.dropout=0.3'], 'gen1/train', '--student.dropout'),
    (['--unlabeled_ratio=3'], 'gen1/train', '--student.unlabeled_ratio'),
    (['--randaug_magnitude=9'], 'gen1/train', '--student.randaug_magnitude'),
    (['--teacher.dropout=0.3'], 'gen0/train', '--teacher.dropout'),
    (['--models=b1'], 'gen0/train', '--models'),
    (['--unlabeled=digits:train'], 'gen0/label', '--unlabeled'),
])
def test_changed_setting_names_stage_values_and_restart(tmp_path, change, stage, flag):
  _recorded(tmp_path, [])
  config = _parse([f'--work_dir={tmp_path}', '--train_steps=5', *change])
  with pytest.raises(ValueError) as e:
    stages.check(config)
  message = str(e.value)
  assert f'stage {stage} ' in message and flag in message, message
  assert f'--restart_from={stages.short_name(stage)}' in message, message
  stages.check(config, restart_from=stage)  # what is redone is not compared


def test_settings_that_do_not_shape_results_never_block_a_rerun(tmp_path):
  _recorded(tmp_path, [])
  stages.check(_parse([f'--work_dir={tmp_path}', '--train_steps=5', '--log_every=3',
                       '--progress=none', '--checkpoint_every=7', '--eval_batch_size=64',
                       '--label.batch_size=8', '--filter.read_batch=100',
                       '--steps_per_execution=4']))


def test_fingerprints_of_older_code_without_a_new_setting_do_not_block_at_its_default(tmp_path):
  """A work dir made before a setting existed: at its default the setting is no change (the stage
  was made with that behaviour); given another value, it is."""
  config = _parse([f'--work_dir={tmp_path}', '--train_steps=5'])
  previous = None
  for stage, fingerprint in stages.fingerprints(config).items():  # as older code wrote them
    old = {**fingerprint, 'upstream': previous,
           'settings': {k: v for k, v in fingerprint['settings'].items()
                        if k not in ('pseudo_label_smoothing', 'pseudo_loss_weighting')}}
    shards.write_json(stages._path(config, stage), old)  # pylint: disable=protected-access
    previous = settings.digest(old)
  stages.check(config)
  for stage in stages.stage_ids(config):  # a stage recorded now chains onto the older ones
    if stage == 'gen1/train':
      stages.record(config, stage)
  stages.check(config)
  changed = _parse([f'--work_dir={tmp_path}', '--train_steps=5',
                    '--student.pseudo_label_smoothing=0.2'])
  with pytest.raises(ValueError, match=r'stage gen1/train .*pseudo_label_smoothing '
                     r'\(--student.pseudo_label_smoothing\): None -> 0.2'):
    stages.check(changed)


def test_restart_from_names_are_checked():
  config = _parse(['--train_steps=5', '--generations=2'])
  assert stages.resolve(config, 'filter') == 'gen0/filter'
  assert stages.resolve(config, 'gen1/label') == 'gen1/label'
  with pytest.raises(ValueError, match="restart_from 'gen3/label' is not a stage"):
    stages.resolve(config, 'gen3/label')
  with pytest.raises(ValueError, match="'split' is not a stage"):
    stages.resolve(config, 'split')


def test_filter_once_relabels_the_first_balanced_set():
  config = _parse(['--train_steps=5', '--generations=3', '--filter_once'])
  assert stages.stage_ids(config) == ['gen0/train', 'gen0/label', 'gen0/filter', 'gen1/train',
                                      'gen1/label', 'gen2/train', 'gen2/label', 'gen3/train']
  assert config.label_config(0).unlabeled == 'digits:test'
  for g in (1, 2):
    assert config.label_config(g).unlabeled == 'pseudo:/tmp/w/gen0/balanced/*.tfrecord'
  assert config.train_config(1).pseudo == 'pseudo:/tmp/w/gen0/balanced/*.tfrecord'
  assert config.train_config(2).pseudo == 'pseudo:/tmp/w/gen1/pseudo/*.tfrecord'
  assert config.train_config(3).pseudo == 'pseudo:/tmp/w/gen2/pseudo/*.tfrecord'
  again = _parse(['--train_steps=5', '--generations=3'])
  assert again.label_config(2).unlabeled == 'digits:test'
  assert again.train_config(3).pseudo == 'pseudo:/tmp/w/gen2/balanced/*.tfrecord'


def test_control_generations_pick_which_students_get_controls():
  """--control_generations=2 trains the controls beside the second student only; unset, beside
  every student; a generation that is not a student's is refused before any work."""
  every = _parse(['--train_steps=5', '--generations=2', '--controls=labeled_only'])
  assert [s for s in stages.stage_ids(every) if stages.is_control(s)] == [
      'gen1/control_labeled_only', 'gen2/control_labeled_only']
  last = _parse(['--train_steps=5', '--generations=2', '--controls=labeled_only,no_noise',
                 '--control_generations=2'])
  assert stages.stage_ids(last) == ['gen0/train', 'gen0/label', 'gen0/filter', 'gen1/train',
                                    'gen1/label', 'gen1/filter', 'gen2/train',
                                    'gen2/control_labeled_only', 'gen2/control_no_noise']
  assert last.controls_of(1) == () and last.controls_of(2) == ('labeled_only', 'no_noise')
  # The fingerprints of the shared stages do not depend on which generations get controls.
  shared = stages.fingerprints(every)
  assert all(shared[s] == p for s, p in stages.fingerprints(last).items() if s in shared)
  with pytest.raises(ValueError, match=r'control_generations must name student generations '
                                       r'1..2 \(generations=2\), got 3'):
    _parse(['--train_steps=5', '--generations=2', '--controls=labeled_only',
            '--control_generations=1,3']).validate()
