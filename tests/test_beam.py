"""ns-label / ns-filter --runner=beam on Beam's DirectRunner over 5,000 real CIFAR-10 JPEGs: the
same records and stats as the shard labeler, exactly ns-filter's selection, a SIGKILLed run
rerun without partial or duplicated output, bad settings refused, and no Beam import in the core.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, _extract
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline as pipeline_lib
from test_robust_suites import tiny_model_dirs

IN_MEMORY = '--direct_running_mode=in_memory'
TWO_PROCESSES = ('--runner=DirectRunner --direct_num_workers=2 '
                 '--direct_running_mode=multi_processing')
BATCH = 250
SHARDS = 4


def read_records(folder):
  """{source id: [records as dicts]} of every *.tfrecord in `folder` (a list: duplicates show)."""
  out = collections.defaultdict(list)
  for path in sorted(tf.io.gfile.glob(os.path.join(str(folder), '*.tfrecord'))):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      f = tf.train.Example.FromString(raw).features.feature
      out[f['image/source_id'].bytes_list.value[0].decode()].append({
          'label': f['pseudo/label'].int64_list.value[0],
          'confidence': f['pseudo/confidence'].float_list.value[0],
          'probabilities': np.asarray(f['pseudo/probabilities'].float_list.value),
          'teacher': f['pseudo/teacher'].bytes_list.value[0],
          'encoded': f['image/encoded'].bytes_list.value[0]})
  return out


def stats_of(folder):
  return json.loads((folder / 'stats.json').read_text())


@pytest.fixture(scope='module')
def teacher(tmp_path_factory, cifar10_small):
  """The suite's trained tiny CIFAR-10 model (width/depth 0.25, 32 px), shared with the
  robustness and FixRes tests."""
  return tiny_model_dirs(tmp_path_factory, cifar10_small)[1]


@pytest.fixture(scope='module')
def unlabeled(tmp_path_factory):
  """5,000 real CIFAR-10 test JPEGs (500 per class) as a folder: source."""
  return f'folder:{_extract(tmp_path_factory, "beam_unlabeled", {"test": 500}) / "test"}'


def label_config(teacher, unlabeled, output_dir, **overrides):
  return label_lib.LabelConfig(model_dir=teacher, unlabeled=unlabeled, output_dir=str(output_dir),
                               num_shards=SHARDS, batch_size=BATCH, temperature=2.0,
                               progress='none', **overrides)


@pytest.fixture(scope='module')
def shard_labeled(teacher, unlabeled, tmp_path_factory):
  """The shard labeler's output folder."""
  out = tmp_path_factory.mktemp('shard_labeled')
  label_lib.label(label_config(teacher, unlabeled, out))
  return out


@pytest.fixture(scope='module')
def beam_labeled(teacher, unlabeled, tmp_path_factory):
  """The Beam labeler's output folder (DirectRunner, in memory)."""
  out = tmp_path_factory.mktemp('beam_labeled')
  stats = label_lib.label(label_config(teacher, unlabeled, out, runner='beam',
                                       beam_options=IN_MEMORY))
  assert stats['complete']
  return out


def test_core_imports_no_beam_and_beam_runner_without_beam_says_how_to_install(tmp_path):
  script = '''
import sys
import noisy_student_tf.selftrain
from noisy_student_tf.selftrain import label, filter, pipeline, stages
from noisy_student_tf.cli import config_flags
assert 'apache_beam' not in sys.modules, 'importing the core imported apache_beam'
import importlib.abc
class BlockBeam(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name == 'apache_beam' or name.startswith('apache_beam.'):
      raise ImportError('apache_beam is not installed')
sys.meta_path.insert(0, BlockBeam())
label.LabelConfig(model_dir='m', unlabeled='images:x/*.jpg', output_dir='o').validate()
try:
  label.LabelConfig(model_dir='m', unlabeled='images:x/*.jpg', output_dir='o',
                    runner='beam').validate()
except ValueError as e:
  print('ERROR', e)
'''
  env = {**os.environ, 'PYTHONPATH': str(REPO)}
  done = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "ERROR runner=beam needs Apache Beam: pip install 'noisy-student-tf[beam]'" in done.stdout


def test_beam_labeler_writes_the_shard_labelers_records_and_stats(shard_labeled, beam_labeled):
  local, beam = read_records(shard_labeled), read_records(beam_labeled)
  assert len(local) == 5000 and set(beam) == set(local)
  assert {len(v) for v in beam.values()} == {1}  # every source id exactly once
  for sid, (b,) in beam.items():
    (a,) = local[sid]
    assert b['label'] == a['label'] and b['encoded'] == a['encoded'] and b['teacher'] == a['teacher']
    # Both use ns-label's batches of config.batch_size, but an image need not share its batch with
    # the same images (a shard's last batch and a RunInference call's last batch are partial), and
    # float32 logits move by a few units in the last place with that (CI saw 1.2e-6 on a
    # confidence of 0.70): the stored floats are compared to 1e-5, the labels exactly.
    np.testing.assert_allclose(b['probabilities'], a['probabilities'], atol=1e-5, rtol=0)
    assert abs(b['confidence'] - a['confidence']) <= 1e-5
  a, b = stats_of(shard_labeled), stats_of(beam_labeled)
  assert {k for k in a if a[k] != b[k]} <= {'shard_seconds'}
  assert b['count'] == 5000 and sum(b['class_counts']) == 5000
  assert sum(c > 0 for c in b['class_counts']) >= 3  # a trained teacher: several classes
  assert label_lib.is_complete(str(beam_labeled)) and (beam_labeled / 'plot.png').exists()
  assert sorted(p.name for p in beam_labeled.glob('*.tfrecord')) == a['shards']
  assert not [p for p in beam_labeled.iterdir() if p.name.startswith('.') or p.suffix == '.tmp']
  # A rerun of a complete output returns it as it is.
  mtime = (beam_labeled / 'stats.json').stat().st_mtime
  again = label_lib.label(label_lib.LabelConfig(**{
      **json.loads((beam_labeled / 'label_config.json').read_text()), 'output_dir':
      str(beam_labeled), 'batch_size': BATCH, 'runner': 'beam', 'beam_options': IN_MEMORY}))
  assert again['count'] == 5000 and (beam_labeled / 'stats.json').stat().st_mtime == mtime


def test_beam_filter_selects_exactly_what_ns_filter_selects(shard_labeled, tmp_path):
  records = [r for v in read_records(shard_labeled).values() for r in v]
  threshold = float(np.quantile([r['confidence'] for r in records], 0.3).round(2))
  above = np.bincount([r['label'] for r in records if r['confidence'] >= threshold], minlength=10)
  k = int(np.median(above))  # some classes trimmed to K, some duplicated up to it
  config = dict(input=str(shard_labeled), threshold=threshold, per_class=k, num_shards=3,
                seed=3, progress='none')
  local = filter_lib.filter_records(filter_lib.FilterConfig(output_dir=str(tmp_path / 'local'),
                                                            **config))
  beam = filter_lib.filter_records(filter_lib.FilterConfig(
      output_dir=str(tmp_path / 'beam'), runner='beam', beam_options=IN_MEMORY, **config))
  counts = local['class_counts_above_threshold']
  assert min(counts) < k < max(counts)
  same = ('num_input', 'num_above_threshold', 'num_unique_kept', 'num_output', 'num_classes',
          'class_counts_input', 'class_counts_above_threshold', 'class_counts_unique_kept',
          'class_counts_output', 'confidence_histogram', 'threshold', 'per_class', 'num_shards')
  assert {k: beam[k] for k in same} == {k: local[k] for k in same}
  assert sum(beam['shard_sizes']) == beam['num_output'] == k * sum(c > 0 for c in counts)
  selected = {run: collections.Counter({sid: len(v) for sid, v in read_records(
      tmp_path / run).items()}) for run in ('local', 'beam')}
  assert selected['beam'] == selected['local']  # the same records, each copied as often
  assert filter_lib.is_complete(str(tmp_path / 'beam')) and (tmp_path / 'beam' / 'plot.png').exists()
  assert json.loads((tmp_path / 'beam' / 'stats.json').read_text())['num_output'] == beam['num_output']


def test_killed_beam_labeling_then_rerun_leaves_every_image_once(teacher, unlabeled, shard_labeled,
                                                                 tmp_path):
  out = tmp_path / 'out'
  cmd = [sys.executable, '-m', 'noisy_student_tf.cli.label', f'--model_dir={teacher}',
         f'--unlabeled={unlabeled}', f'--output_dir={out}', f'--num_shards={SHARDS}',
         f'--batch_size={BATCH}', '--temperature=2', '--runner=beam',
         f'--beam_options={TWO_PROCESSES}']
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # its Beam workers die with it
  staging = out / '.beam-staging'
  deadline = time.time() + 600
  while proc.poll() is None and time.time() < deadline and not any(
      p.is_file() for p in staging.rglob('*')):
    time.sleep(0.05)
  killed_mid_run = proc.poll() is None
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert killed_mid_run, 'the Beam labeling finished (or failed) before it could be killed'
  assert not (out / 'stats.json').exists() and not list(out.glob('*.tfrecord'))
  stats = label_lib.label(label_config(teacher, unlabeled, out, runner='beam',
                                       beam_options=IN_MEMORY))
  records = read_records(out)
  assert set(records) == set(read_records(shard_labeled))
  assert {len(v) for v in records.values()} == {1} and stats['count'] == 5000
  assert not staging.exists() and sorted(p.name for p in out.glob('*.tfrecord*')) == stats['shards']


@pytest.mark.parametrize('overrides,message', [
    ({'beam_options': 'DirectRunner'}, "'DirectRunner' is not an option"),
    ({'beam_options': '--direct_num_worker=2'}, "Beam knows no option '--direct_num_worker=2'"),
    ({'beam_options': '--runner="Direct'}, 'cannot be split into options'),
    ({'shard_index': 1}, 'shard_index=1 with runner=beam'),
    ({'unlabeled': 'tfds:cifar10:test'}, 'runner=beam reads folder:, images:, digits:'),
    ({'runner': 'local', 'beam_options': IN_MEMORY}, 'only used with runner=beam'),
])
def test_bad_beam_settings_fail_before_work(teacher, tmp_path, overrides, message):
  config = {'model_dir': teacher, 'unlabeled': 'images:/nonexistent/*.jpg', 'runner': 'beam',
            'output_dir': str(tmp_path / 'out'), 'num_shards': 2, **overrides}
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace('[', r'\[')):
    label_lib.label(label_lib.LabelConfig(**config))
  assert not (tmp_path / 'out').exists()


def test_ns_pipeline_label_runner_reaches_label_and_filter():
  config = pipeline_lib.PipelineConfig(work_dir='/w', label_runner='beam',
                                       label_beam_options=IN_MEMORY)
  for stage in (config.label_config(0), config.filter_config(0)):
    assert (stage.runner, stage.beam_options) == ('beam', IN_MEMORY)
  assert pipeline_lib.PipelineConfig(work_dir='/w').label_config(1).runner == 'local'
