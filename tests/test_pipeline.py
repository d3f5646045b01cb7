"""ns-pipeline: SIGKILL at a random stage then rerun completes with every unlabeled image labeled
exactly once; the report; bad input fails before any work; student/teacher checks."""

import collections
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest

from noisy_student_tf import models
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline, stages
from noisy_student_tf.train import trainer
from test_label import make_teacher, read_records, source_ids  # pylint: disable=g-bad-import-order

TINY_ARGS = ['--labeled=digits:test', '--labeled_per_class=3', '--eval_data=digits:test',
             '--models=b0', '--widths=0.25', '--depths=0.25', '--resolution=16', '--small_image',
             '--batch_size=8', '--eval_batch_size=128', '--teacher.train_steps=12',
             '--student.train_steps=12', '--unlabeled_ratio=2', '--student.randaug_layers=1',
             '--student.randaug_magnitude=5', '--checkpoint_every=4', '--label.num_shards=4',
             '--label.batch_size=16', '--filter.num_shards=2', '--filter.threshold=0.0', '--filter.per_class=40']

# Where the first run is killed: a file that exists only once the stage has started.
KILL_POINTS = {'teacher training': 'gen0/model/ckpt', 'labeling': 'gen0/pseudo/shard_stats',
               'student training': 'gen1/model/ckpt'}


def _cmd(work_dir):
  return [sys.executable, '-m', 'noisy_student_tf.cli.pipeline', f'--work_dir={work_dir}',
          *TINY_ARGS]


@pytest.fixture(scope='module')
def killed_then_rerun(tmp_path_factory):
  """A tiny run SIGKILLed at a random stage, then rerun to the end: (work dir, stage, rerun
  process, the teacher weights' mtime at the kill or None)."""
  work = tmp_path_factory.mktemp('killed') / 'w'
  stage = random.choice(sorted(KILL_POINTS))
  marker = work / KILL_POINTS[stage]
  proc = subprocess.Popen(_cmd(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(random.uniform(0.0, 0.3))
  alive = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert alive, f'ns-pipeline ended before the kill during {stage}'
  assert not (work / 'gen1' / 'eval.json').exists()
  teacher_weights = work / 'gen0' / 'model' / 'final' / 'ema.weights.h5'
  teacher_mtime = teacher_weights.stat().st_mtime_ns if teacher_weights.exists() else None
  rerun = subprocess.run(_cmd(work), capture_output=True, text=True, timeout=400)
  return work, stage, rerun, teacher_mtime


def test_sigkill_at_random_stage_then_rerun_completes(killed_then_rerun):
  work, stage, rerun, teacher_mtime = killed_then_rerun
  teacher_weights = work / 'gen0' / 'model' / 'final' / 'ema.weights.h5'
  assert rerun.returncode == 0, f'killed during {stage}; rerun failed:\n{rerun.stderr[-3000:]}'
  assert 'teacher' in rerun.stdout and 'student 1' in rerun.stdout
  if teacher_mtime is not None:  # a finished stage is not redone
    assert teacher_weights.stat().st_mtime_ns == teacher_mtime
  # Every unlabeled image is pseudo-labeled exactly once, by source id.
  ids = collections.Counter(r['source_id'] for r in read_records(work / 'gen0' / 'pseudo'))
  unlabeled = source_ids('folder:' + str(work / 'data' / 'unlabeled'))
  assert len(unlabeled) == 330
  assert sorted(ids) == sorted(unlabeled) and set(ids.values()) == {1}, f'killed during {stage}'
  report = json.loads((work / 'report.json').read_text())
  assert [r['generation'] for r in report] == [0, 1]
  for r in report:
    assert {'generation', 'model', 'top1', 'top5', 'num_pseudo_labels', 'seconds'} <= set(r)
    assert 0.0 <= r['top1'] <= r['top5'] <= 1.0
  filtered = json.loads((work / 'gen0' / 'balanced' / 'stats.json').read_text())
  present = sum(1 for c in filtered['class_counts_above_threshold'] if c)
  # K=40 for each class the teacher predicts at all (a 12-step teacher predicts few classes).
  assert report[1]['num_pseudo_labels'] == filtered['num_output'] == 40 * present
  report_md = (work / 'report.md').read_text()
  assert sum(line.startswith('|') for line in report_md.splitlines()) == 4
  # The teacher's pseudo-label gallery: its wrong images are exactly the most confident
  # pseudo-labels that disagree with the hidden label (the class folder of the split).
  gallery = json.loads((work / 'gen0' / 'gallery' / 'gallery.json').read_text())
  names = gallery['classes_shown']
  wrong = collections.defaultdict(list)
  confusion = [[0] * len(names) for _ in names]  # rows: the hidden label
  for i, r in enumerate(read_records(work / 'gen0' / 'pseudo')):
    confusion[names.index(r['source_id'].split('/')[0])][r['label']] += 1
    if r['source_id'].split('/')[0] != names[r['label']]:
      wrong[r['label']].append((-r['confidence'], i, r['source_id']))
  assert gallery['selected']['wrong'] == {
      n: [sid for *_, sid in sorted(wrong[c])[:8]] for c, n in enumerate(names)}
  assert '](gen0/gallery/pseudo_gallery.png)' in report_md
  for name in ('pseudo_accuracy.png', 'pseudo_confusion.png', 'pseudo_reliability.png'):
    assert (work / 'gen0' / 'gallery' / name).exists(), name
    assert f'](gen0/gallery/{name})' in report_md
  assert gallery['confusion']['classes'] == names and gallery['confusion']['counts'] == confusion
  assert sum(map(sum, confusion)) == sum(gallery['reliability']['records']) == 330
  assert (work / 'report.png').stat().st_size > 1000
  assert (work / 'gen0' / 'balanced' / 'plot.png').exists()


def _digests(folder):
  """{relative path: (sha256, mtime)} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = (hashlib.sha256(f.read()).hexdigest(),
                                              os.stat(path).st_mtime_ns)
  return out


def test_changed_threshold_stops_then_restart_from_filter_keeps_teacher_and_pseudo(
    killed_then_rerun, tmp_path):
  work = tmp_path / 'w'
  shutil.copytree(killed_then_rerun[0], work)  # a finished demo-like work dir (threshold 0.0)
  teacher, pseudo = _digests(work / 'gen0' / 'model'), _digests(work / 'gen0' / 'pseudo')
  student = _digests(work / 'gen1' / 'model')

  changed = subprocess.run([*_cmd(work), '--filter.threshold=0.1'], capture_output=True,
                           text=True, timeout=300)
  assert changed.returncode != 0
  assert ('threshold (--filter.threshold): 0.0 -> 0.1' in changed.stderr and
          '--restart_from=filter' in changed.stderr), changed.stderr[-2000:]
  assert _digests(work / 'gen1' / 'model') == student  # stopped before any work

  redo = subprocess.run([*_cmd(work), '--filter.threshold=0.1', '--restart_from=filter'],
                        capture_output=True, text=True, timeout=400)
  assert redo.returncode == 0, redo.stderr[-3000:]
  assert json.loads((work / 'gen0' / 'balanced' / 'stats.json').read_text())['threshold'] == 0.1
  assert _digests(work / 'gen0' / 'model') == teacher
  assert _digests(work / 'gen0' / 'pseudo') == pseudo
  redone = _digests(work / 'gen1' / 'model')
  final = [k for k in student if k.startswith('final') or k == 'config.json']
  assert len(final) == 3 and all(redone[k][1] > student[k][1] for k in final), 'not retrained'
  report = json.loads((work / 'report.json').read_text())
  assert report[1]['num_pseudo_labels'] > 0


def test_controls_train_beside_a_finished_student_and_restart_alone(killed_then_rerun, tmp_path):
  """--controls on a finished work dir trains only the controls, at the student's steps, and puts
  them in the report; restarting one control redoes only it."""
  work = tmp_path / 'w'
  shutil.copytree(killed_then_rerun[0], work)
  before = {d: _digests(work / d) for d in ('gen0/model', 'gen0/pseudo', 'gen1/model')}
  cmd = [*_cmd(work), '--controls=labeled_only,no_noise']
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  assert {d: _digests(work / d) for d in before} == before  # nothing else redone
  evals = {n: json.loads((work / 'gen1' / 'controls' / n / 'eval.json').read_text())
           for n in ('labeled_only', 'no_noise')}
  assert evals['labeled_only']['steps'] == evals['no_noise']['steps'] == 12  # the student's
  assert evals['labeled_only']['rows_per_step'] == evals['no_noise']['rows_per_step'] == 8 + 16
  only = json.loads((work / 'gen1' / 'controls' / 'labeled_only' / 'model' /
                     'config.json').read_text())['training']
  assert only['pseudo'] is None and only['batch_size'] == 24
  quiet = json.loads((work / 'gen1' / 'controls' / 'no_noise' / 'model' /
                      'config.json').read_text())['training']
  assert quiet['randaug_layers'] == 0 and quiet['pseudo'] is not None
  report = json.loads((work / 'report.json').read_text())
  assert set(report[1]['controls']) == {'labeled_only', 'no_noise'}
  assert report[1]['controls']['no_noise']['top1'] == evals['no_noise']['top1']
  table = (work / 'report.md').read_text()
  assert 'labeled_only control top-1 | no_noise control top-1' in table
  assert f"{100 * evals['labeled_only']['top1']:.2f}%" in table.splitlines()[3]

  # Restarting one control removes only it (the rerun that follows trains it as above).
  config = dataclasses.replace(pipeline.PipelineConfig.from_json(
      json.loads((work / 'pipeline_config.json').read_text())), work_dir=str(work))
  kept = _digests(work / 'gen1' / 'controls' / 'labeled_only')
  stages.check(config, restart_from='gen1/control_no_noise')
  removed = stages.restart(config, 'gen1/control_no_noise')
  assert sorted(removed) == sorted([str(work / 'gen1' / 'controls' / 'no_noise'),
                                    str(work / 'stages' / 'gen1_control_no_noise.json')])
  assert _digests(work / 'gen1' / 'controls' / 'labeled_only') == kept
  assert {d: _digests(work / d) for d in before} == before
  stages.check(config)  # the others' fingerprints still hold


def test_controls_only_trains_the_controls_in_a_second_process(killed_then_rerun, tmp_path):
  """--controls_only=1 trains only that student's controls (nothing else is redone, no report);
  the pipeline run then takes them as done.  A control held by a live process is not trained
  twice; a stale hold (its process gone) is taken over."""
  work = tmp_path / 'w'
  shutil.copytree(killed_then_rerun[0], work)
  before = {d: _digests(work / d) for d in ('gen0/model', 'gen0/pseudo', 'gen1/model')}
  report = (work / 'report.json').read_text()
  cmd = [*_cmd(work), '--controls=labeled_only']
  run = subprocess.run([*cmd, '--controls_only=1'], capture_output=True, text=True, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'control labeled_only of generation 1: top-1' in run.stdout
  evaluated = json.loads((work / 'gen1' / 'controls' / 'labeled_only' / 'eval.json').read_text())
  assert evaluated['steps'] == 12 and (work / 'report.json').read_text() == report
  assert not (work / 'gen1' / 'controls' / 'labeled_only' / pipeline.RUNNING_FILE).exists()
  assert {d: _digests(work / d) for d in before} == before
  trained = _digests(work / 'gen1' / 'controls' / 'labeled_only')
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
  assert run.returncode == 0, run.stderr[-3000:]
  assert _digests(work / 'gen1' / 'controls' / 'labeled_only') == trained  # taken as done
  assert json.loads((work / 'report.json').read_text())[1]['controls']['labeled_only'] == evaluated
  bad = subprocess.run([*cmd, '--controls_only=2'], capture_output=True, text=True, timeout=400)
  assert bad.returncode != 0 and 'controls_only must be a student generation 1..1, got 2' in (
      bad.stderr + bad.stdout)

  config = dataclasses.replace(pipeline.PipelineConfig.from_json(
      json.loads((work / 'pipeline_config.json').read_text())), work_dir=str(work))
  hold = work / 'gen1' / 'controls' / 'no_noise' / pipeline.RUNNING_FILE
  hold.parent.mkdir(parents=True)
  host = socket.gethostname()
  claim = lambda: pipeline._claim_control(config, 1, 'no_noise')  # pylint: disable=protected-access
  hold.write_text(f'{host} {os.getppid()}')  # a live process other than this one
  assert not claim()
  hold.write_text(f'{host}-elsewhere 1')  # another host's: cannot be checked, so waited for
  assert not claim()
  gone = subprocess.Popen(['true'])
  gone.wait()
  hold.write_text(f'{host} {gone.pid}')
  assert claim() and hold.read_text() == f'{host} {os.getpid()}'


BASE = dict(label=label_lib.LabelConfig(unlabeled='digits:train'), models=('b0',),
            widths=(0.25,), depths=(0.25,), student={'train_steps': 5})
TEACHER = trainer.TrainConfig(labeled='digits:test', eval_data='digits:test', resolution=16,
                              small_image=True, train_steps=5)


def _config(tmp_path, **override):
  """The tiny PipelineConfig of these tests with top-level fields or nested configs replaced."""
  return pipeline.PipelineConfig(work_dir=str(tmp_path / 'w'), **{'teacher': TEACHER, **BASE,
                                                                  **override})


@pytest.mark.parametrize('override,message', [
    ({'filter': filter_lib.FilterConfig(threshold=1.5)}, 'threshold must be in [0, 1], got 1.5'),
    ({'filter': filter_lib.FilterConfig(threshold=-0.2)}, 'threshold must be in [0, 1], got -0.2'),
    ({'filter': filter_lib.FilterConfig(per_class=0)},
     'per_class (K) must be a positive integer or None (no balancing), got 0'),
    ({'filter': filter_lib.FilterConfig(per_class=-3)}, 'got -3'),
    ({'models': ('b0', 'b0', 'b1')}, 'models needs 1 value or one per generation'),
    ({'label': label_lib.LabelConfig()}, 'unlabeled is required'),
    ({'student': {'train_steps': None}},
     'student (generation 1): give exactly one of train_steps and epochs'),
    ({'student': {'dropout': 2.0}}, 'student (generation 1): dropout'),
    ({'student': {'data_dir': '/x'}}, 'student.data_dir cannot differ'),
    ({'student': {'dorpout': 0.1}}, "student.dorpout is not a training setting"),
    ({'teacher': dataclasses.replace(TEACHER, model='b3')}, 'teacher.model is set by the pipeline'),
    ({'label': label_lib.LabelConfig(unlabeled='digits:train', temperature=0)},
     'temperature must be > 0'),
    ({'controls': ('labeled_only', 'noise')}, "unknown control 'noise'"),
])
def test_bad_settings_fail_before_work(tmp_path, override, message):
  config = _config(tmp_path, **override)
  with pytest.raises(ValueError) as e:
    pipeline.run_pipeline(config)
  assert message in str(e.value)
  assert not (tmp_path / 'w').exists()


def test_teacher_with_other_class_count_is_refused(tmp_path):
  teacher = make_teacher(tmp_path / 'teacher5', num_classes=5)
  config = _config(tmp_path, teacher_model_dir=teacher)
  with pytest.raises(ValueError, match='has 5 classes but the labeled data'):
    pipeline.run_pipeline(config)
  assert not (tmp_path / 'w' / 'gen0').exists() and not (tmp_path / 'w' / 'gen1').exists()


def test_empty_unlabeled_source_is_refused(tmp_path):
  (tmp_path / 'empty' / 'a').mkdir(parents=True)
  config = _config(tmp_path, label=label_lib.LabelConfig(unlabeled=f'folder:{tmp_path / "empty"}'))
  with pytest.raises(ValueError, match='unlabeled source'):
    pipeline.run_pipeline(config)
  assert not (tmp_path / 'w' / 'gen0').exists()


def test_student_checks(tmp_path):
  teacher = make_teacher(tmp_path / 't', width=0.5, depth=0.5)
  smaller = models.make_config('b0', 10, width=0.25, depth=0.25, resolution=16, small_image=True)
  larger = models.make_config('b1', 10, width=0.5, depth=0.75, resolution=16, small_image=True)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    assert pipeline.check_student(teacher, smaller) is False
  assert any('smaller than its teacher' in str(w.message) for w in caught)
  assert pipeline.check_student(teacher, larger) is True
  with pytest.raises(ValueError, match='the student has 7 classes but its teacher'):
    pipeline.check_student(teacher, models.make_config('b0', 7, width=0.5, depth=0.5))


def test_binary_exits_non_zero_on_bad_threshold(tmp_path):
  proc = subprocess.run([*_cmd(tmp_path / 'w'), '--filter.threshold=2'], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode != 0
  assert 'threshold must be in [0, 1], got 2.0' in proc.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('name', ['demo', 'cifar10_4000', 'svhn', 'imagenet_b7_l2_noisy',
                                  'imagenet_b0_noisy'])
def test_recipes_parse_into_valid_configs(name):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.cli import pipeline as cli  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), '..', 'flags', f'{name}.cfg')
  try:
    flags.FLAGS(['ns-pipeline', f'--flagfile={path}', '--work_dir=/tmp/unused'])
    config = cli.make_config()
  finally:
    flags.FLAGS.unparse_flags()
  config.validate()
  assert config.filter.threshold == 0.3 and config.label.label_type == 'soft'
