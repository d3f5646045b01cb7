"""The stages of ns-pipeline, what each was made with, and redoing them.

Stages, in order: `split` (with labeled_per_class), `gen0/train` (the teacher), then per
generation g: `gen<g>/label`, `gen<g>/filter` (with filter_once only for g = 0),
`gen<g+1>/train` (the student), and `gen<g+1>/control_<name>` for each of `controls`
(selftrain/controls.py; only for the generations in `control_generations` where it is set).  Short names:
teacher = gen0/train, label = gen0/label, filter = gen0/filter, student = gen1/train.
Controls are leaves: their fingerprints follow from their student's, no later stage depends on
them, and restarting one redoes only it.

Each stage writes its fingerprint, W/stages/<stage>.json, before it starts: the settings that
determine its output (settings marked result=False, such as log intervals, are left out) and the
digest of the stage before it, so a change anywhere upstream is a change here too.  A rerun
whose settings differ from a stage's fingerprint stops before any work, naming the stage, the
setting, both values and the --restart_from that redoes it; `restart(stage)` removes that
stage's outputs and every later stage's, keeping the earlier ones.
"""

import logging
import os
import shutil

from noisy_student_tf import settings
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain import split as split_lib

STAGES_DIR = 'stages'
ALIASES = {'teacher': 'gen0/train', 'label': 'gen0/label', 'filter': 'gen0/filter',
           'student': 'gen1/train'}
_SHORT = {v: k for k, v in ALIASES.items()}
CONTROL_PREFIX = 'control_'


def stage_ids(config):
  """The stages of `config` in run order, e.g. ['split', 'gen0/train', 'gen0/label', ...]."""
  ids = ['split'] if config.labeled_per_class is not None else []
  ids.append('gen0/train')
  for g in range(config.generations):
    ids += [f'gen{g}/label'] + ([] if config.filter_once and g >= 1 else [f'gen{g}/filter'])
    ids.append(f'gen{g + 1}/train')
    ids += [f'gen{g + 1}/{CONTROL_PREFIX}{name}' for name in config.controls_of(g + 1)]
  return ids


def is_control(stage):
  """True for a control stage (gen<g>/control_<name>)."""
  return stage.split('/')[-1].startswith(CONTROL_PREFIX)


def control_name(stage):
  """'labeled_only' for 'gen1/control_labeled_only'."""
  return stage.split('/')[-1][len(CONTROL_PREFIX):]


def resolve(config, name):
  """The stage id that `name` (an id or a short name) means; ValueError listing the valid ones."""
  stage = ALIASES.get(name, name)
  ids = stage_ids(config)
  if stage not in ids:
    raise ValueError(f'restart_from {name!r} is not a stage of this run; stages: {ids} (or '
                     f'{sorted(k for k, v in ALIASES.items() if v in ids)})')
  return stage


def short_name(stage):
  """The name to pass to --restart_from for `stage`."""
  return _SHORT.get(stage, stage)


def _generation(stage):
  return int(stage.split('/')[0][3:])


def own_settings(config, stage):
  """The settings that determine `stage`'s output (JSON values; paths inside the work dir are
  left out, they follow from the work dir)."""
  if stage == 'split':
    return {'labeled': config.labeled, 'labeled_per_class': config.labeled_per_class,
            'split_seed': config.split_seed, 'data_dir': config.teacher.data_dir,
            'label_offset': config.teacher.label_offset}
  g = _generation(stage)
  kind = stage.split('/')[1]
  if is_control(stage):  # everything else follows from the student's fingerprint (upstream)
    return {'control': control_name(stage)}
  if kind == 'train':
    if g == 0 and config.teacher_model_dir:
      return {'teacher_model_dir': os.path.abspath(config.teacher_model_dir)}
    train = config.train_config(g)
    idle = ()  # settings without effect in this run
    if train.pseudo is None:
      idle += ('unlabeled_ratio', 'epochs_over', 'pseudo_label_smoothing')
    if not train.randaug_layers:
      idle += ('randaug_magnitude',)
    out = settings.result_settings(
        train, exclude=('model_dir', 'pseudo', 'labeled', 'eval_data', 'init_checkpoint') + idle)
    out['labeled'] = config.labeled
    out['init_checkpoint'] = ('the teacher' if g > 0 and config.student_init_from_teacher
                              else train.init_checkpoint)
    return out
  if kind == 'label':
    out = settings.result_settings(config.label_config(g), exclude=('model_dir', 'output_dir',
                                                                    'unlabeled'))
    out['unlabeled'] = config.unlabeled if config.labeled_per_class is None else 'the split'
    if config.filter_once and g >= 1:
      out['unlabeled'] = 'the balanced set of gen0'
    return out
  return settings.result_settings(config.filter_config(g), exclude=('input', 'output_dir'))


def fingerprints(config):
  """{stage: {'settings': ..., 'upstream': digest of the previous stage's fingerprint}}."""
  out, previous = {}, None
  for stage in stage_ids(config):
    out[stage] = {'stage': stage, 'settings': own_settings(config, stage), 'upstream': previous}
    if not is_control(stage):
      previous = settings.digest(out[stage])
  return out


def _path(config, stage):
  return os.path.join(config.work_dir, STAGES_DIR, stage.replace('/', '_') + '.json')


def outputs(config, stage):
  """The files and folders `stage` writes (what restart removes)."""
  if stage == 'split':
    data = config.split_dir()
    return [os.path.join(data, name) for name in ('labeled', 'unlabeled', split_lib.SPLIT_FILE)]
  g, kind = _generation(stage), stage.split('/')[1]
  if is_control(stage):
    return [config.control_dir(g, control_name(stage))]
  if kind == 'train':
    own_model = not (g == 0 and config.teacher_model_dir)
    return ([config.model_dir(g)] if own_model else []) + [config.eval_path(g)]
  if kind == 'label':
    return [config.label_config(g).output_dir]
  return [config.filter_config(g).output_dir]


def has_outputs(config, stage):
  """True when any output of `stage` exists (the stage has started or finished)."""
  return any(os.path.exists(p) for p in outputs(config, stage))


def check(config, restart_from=None):
  """Stops before any work when a stage was made with other settings than `config`'s.

  The stages `restart_from` (a stage id) redoes are not compared (see `redone`).
  A stage with outputs but no fingerprint (a work dir from before fingerprints) is adopted.
  Raises ValueError naming the stage, the first differing settings (old and new value, and
  their flags) and the --restart_from that redoes it.
  """
  prints = fingerprints(config)
  for stage in prints:
    if restart_from and stage in redone(config, restart_from):
      continue
    old = shards.read_json(_path(config, stage))
    if old is None:
      continue
    new = prints[stage]
    defaults = _defaults(stage)
    changed = sorted(k for k in set(old['settings']) | set(new['settings'])
                     if old['settings'].get(k) != new['settings'].get(k) and not (
                         k not in old['settings'] and k in defaults and
                         new['settings'][k] == defaults[k]))
    if not changed and old.get('upstream') == _upstream(config, stage, prints):
      continue
    if changed:
      what = '; '.join(f'{k} ({config.flag_of(stage, k)}): {old["settings"].get(k)!r} -> '
                       f'{new["settings"].get(k)!r}' for k in changed[:5])
    else:
      what = 'an earlier stage was redone with other settings'
    state = 'finished' if _finished(config, stage) else 'started'
    raise ValueError(
        f'work_dir {config.work_dir!r}: stage {stage} ({state}) was made with other settings: '
        f'{what}. Rerun with --restart_from={short_name(stage)} to redo it and every stage after '
        'it (keeping what comes before), or use another work_dir')


def _finished(config, stage):
  if stage == 'split':
    return split_lib.is_complete(config.split_dir())
  g, kind = _generation(stage), stage.split('/')[1]
  if is_control(stage):
    return os.path.exists(config.control_eval_path(g, control_name(stage)))
  if kind == 'label':
    return label_lib.is_complete(config.label_config(g).output_dir)
  if kind == 'filter':
    return filter_lib.is_complete(config.filter_config(g).output_dir)
  return os.path.exists(config.eval_path(g))


def _defaults(stage):
  """{setting: default JSON value} of the config class that `stage`'s settings come from.

  A setting missing from an old fingerprint was added to the code since; at its default it is
  taken to be what the stage was made with, so that an upgrade does not block a rerun."""
  from noisy_student_tf.train import trainer  # pylint: disable=g-import-not-at-top
  kind = stage.split('/')[-1]
  if kind == 'train' or is_control(stage):
    return settings.to_json(trainer.TrainConfig())
  if kind == 'label':
    return settings.to_json(label_lib.LabelConfig())
  if kind == 'filter':
    return settings.to_json(filter_lib.FilterConfig())
  return {}


def _upstream(config, stage, prints):
  """The digest `stage`'s fingerprint must name as its upstream: that of the fingerprint on disk
  of the stage before it (the one it was made from), or the computed one when none is there."""
  if is_control(stage):
    previous = stage.split('/')[0] + '/train'
  else:
    ids = [s for s in prints if not is_control(s)]
    i = ids.index(stage)
    if i == 0:
      return None
    previous = ids[i - 1]
  on_disk = shards.read_json(_path(config, previous))
  return settings.digest(on_disk) if on_disk is not None else prints[stage]['upstream']


def record(config, stage):
  """Writes `stage`'s fingerprint (call before the stage starts work)."""
  prints = fingerprints(config)
  shards.write_json(_path(config, stage), {**prints[stage],
                                           'upstream': _upstream(config, stage, prints)})


def adopt_existing(config):
  """Writes fingerprints for stages that have outputs but none (work dirs made before them)."""
  for stage in stage_ids(config):
    if has_outputs(config, stage) and not os.path.exists(_path(config, stage)):
      logging.info('ns-pipeline: %s has outputs but no fingerprint: recording the current '
                   'settings for it', stage)
      record(config, stage)


def redone(config, stage):
  """The stages that restarting from `stage` redoes, in run order: it and every later one, or a
  control stage alone."""
  ids = stage_ids(config)
  return [stage] if is_control(stage) else ids[ids.index(stage):]


def restart(config, stage):
  """Removes the outputs and fingerprints of `stage` and of every stage after it (of a control
  stage: only its own); returns the removed paths.  A given teacher_model_dir is never removed."""
  removed = []
  for s in redone(config, stage):
    for path in outputs(config, s) + [_path(config, s)]:
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
      else:
        continue
      removed.append(path)
  logging.info('ns-pipeline: restart from %s removed %s', stage, removed)
  return removed
