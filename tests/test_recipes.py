"""Every shipped recipe (flags/*.cfg) runs end to end through its binary, with only size overrides.

Each test runs `ns-pipeline` or `ns-train` as a subprocess on the recipe's flagfile, followed by
overrides of sizes only (steps or epochs, width/depth, resolution, shard counts, batch sizes,
per-class counts) and of the data paths, which point at test data:
  - CIFAR-10 recipes: a subset of the real CIFAR-10 JPEGs (conftest's cifar10_small);
  - ImageNet recipes: TFRecords written by tools/make_tfrecords.py's writer from those JPEGs
    (3 classes, see IMAGENET_CLASSES; 1-based labels, read with the recipes' --label_offset=1),
    unlabeled images: an images: glob over other JPEGs of the same set;
  - SVHN: a tensorflow-datasets dataset named svhn_cropped (the official builder's features and
    splits, filled with scikit-learn's handwritten digits at 32x32 RGB), prepared in a temporary
    data_dir, which the binary then finds by name without downloading.
Two overrides that are not sizes, both for imagenet_b0_supervised.cfg: it names
tfds:imagenet2012, so reading the records adds --label_offset=1 with the data paths, and it
names --strategy=tpu, which becomes --strategy=default here.
Everything else (optimizer, schedule, precision, label type, threshold, noise, generations, ...)
is the recipe's, and the tests check it reached the run: every recipe flag that is not
overridden equals the value in W/pipeline_config.json (or the model dir's config.json for
ns-train), and the per-generation settings (flip, noise, precision) are in each model dir.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import settings
from noisy_student_tf.data import imagenet_records as imagenet_records_lib
from noisy_student_tf.selftrain import pipeline as selftrain_pipeline
from noisy_student_tf.train import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS_DIR = REPO / 'flags'

TRAIN_PER_CLASS = 60  # labeled CIFAR-10 JPEGs per class (files 0000-0059)
TEST_PER_CLASS = 30  # eval JPEGs per class
UNLABELED_GLOB = 'train/**/01[01]*.jpg'  # files 0100-0119 of each class: 200 other JPEGs
NUM_UNLABELED = 200
# The ImageNet records hold 3 classes: then a teacher's largest probability is >= 1/3, above the
# recipes' threshold 0.3 however short its training, and every generation has pseudo-labels to
# pass on (with 10 classes, the B7 teacher under RandAugment 2/27 and dropout 0.5 and the L2
# students need some hundred steps at batch 64 before any prediction reaches 0.3).
IMAGENET_CLASSES = ('airplane', 'automobile', 'bird')
IMAGENET_TRAIN_PER_CLASS = 20
IMAGENET_TRAIN = 3 * IMAGENET_TRAIN_PER_CLASS
IMAGENET_EVAL = 3 * TEST_PER_CLASS
SVHN_SIZES = {'train': 300, 'extra': 400, 'test': 200}


# ----------------------------------------------------------------------------------------------
# The recipes' own settings, and that they reach the run.

def _flag_items(lines):
  """(name, value) of each --name=value / --name / --noname line (value None for booleans)."""
  out = []
  for line in lines:
    line = line.strip()
    if line.startswith('--'):
      name, eq, value = line[2:].partition('=')
      out.append((name, value if eq else None))
  return out


def _recipe_flags(recipe):
  return _flag_items((FLAGS_DIR / recipe).read_text().splitlines())


def _expected(name, value, have):
  """The config value `--name[=value]` gives, typed like `have` (the value found in the config)."""
  if value is None:  # a boolean flag
    return not name.startswith('no') or name in have
  current = have[name]
  if isinstance(current, bool):
    return value.lower() in ('true', '1')
  if isinstance(current, list):
    kind = type(current[0]) if current else str
    return [kind(v) for v in value.split(',')]
  if isinstance(current, float):
    return pytest.approx(float(value))
  if isinstance(current, int):
    return int(value)
  return value


def assert_recipe_reached(recipe, overrides, config):
  """Every flag of `recipe` that `overrides` does not set has its value in `config` (a dict)."""
  overridden = {name.removeprefix('no') if value is None and name.removeprefix('no') in config
                else name for name, value in _flag_items(overrides)}
  checked = 0
  for name, value in _recipe_flags(recipe):
    key = name.removeprefix('no') if value is None and name not in config else name
    if key in overridden:
      continue
    assert key in config, f'{recipe}: --{name} is not a setting of the run ({sorted(config)})'
    assert config[key] == _expected(name, value, config), f'{recipe}: --{name}'
    checked += 1
  assert checked >= 10, f'{recipe}: only {checked} recipe flags left to check'


# TrainConfig settings a teacher or student takes from the recipe (the seed is offset per
# generation, a student's init_checkpoint may be its teacher: both checked elsewhere).
ROLE_FIELDS = ({f.name for f in dataclasses.fields(trainer.TrainConfig) if settings.shapes_result(f)}
               - set(selftrain_pipeline.PIPELINE_OWNED) - set(selftrain_pipeline.SHARED_ONLY)
               - {'seed', 'init_checkpoint'})


def _pipeline_config(work):
  """The run's settings by flag name: W/pipeline_config.json's tree flattened (--X and --teacher.X:
  the teacher's, --student.X: what the students train with, --label.X, --filter.X, --unlabeled)."""
  tree = json.loads((work / 'pipeline_config.json').read_text())
  config = selftrain_pipeline.PipelineConfig.from_json(tree)
  flat = {k: v for k, v in tree.items() if not isinstance(v, dict)}
  student = settings.to_json(config.role_settings(1))
  for name, value in tree['teacher'].items():
    flat[name] = flat[f'teacher.{name}'] = value
    flat[f'student.{name}'] = student[name]
  for part in ('label', 'filter'):
    flat.update({f'{part}.{k}': v for k, v in tree[part].items()})
  flat['unlabeled'] = tree['label']['unlabeled']
  return flat


def _training(model_dir):
  return model_dir_lib.read_config(str(model_dir)).training


def check_pipeline_run(work, recipe, overrides, *, generations, eval_examples, num_unlabeled,
                       num_classes=10):
  """The report, every generation's model dir, eval, pseudo-labels and the recipe's settings."""
  config = _pipeline_config(work)
  assert_recipe_reached(recipe, overrides, config)
  assert config['generations'] == generations
  report = json.loads((work / 'report.json').read_text())
  assert [r['generation'] for r in report] == list(range(generations + 1))
  for g, row in enumerate(report):
    assert {'generation', 'model', 'top1', 'top5', 'num_pseudo_labels', 'seconds'} <= set(row)
    assert 0.0 <= row['top1'] <= row['top5'] <= 1.0, row
    model_dir = work / f'gen{g}' / 'model'
    assert model_dir_lib.is_complete(str(model_dir)), f'gen{g} model dir incomplete'
    assert json.loads((model_dir / 'train_result.json').read_text())['step'] >= 1
    ev = json.loads((work / f'gen{g}' / 'eval.json').read_text())
    assert ev['num_examples'] == eval_examples
    assert (ev['top1'], ev['top5']) == (row['top1'], row['top5'])
    model = model_dir_lib.read_config(str(model_dir)).model
    name = config['models'][g if len(config['models']) > 1 else 0]
    assert model.name == (name if name.startswith('efficientnet-') else f'efficientnet-{name}')
    assert model.num_classes == num_classes
    training = _training(model_dir)
    # Settings every generation shares, as the recipe and the overrides give them.
    role = 'teacher.' if g == 0 else 'student.'
    for key in ('flip', 'precision', 'optimizer', 'lr_schedule', 'label_offset', 'small_image',
                'ema_decay', 'weight_decay', 'batch_size'):
      assert training[key] == config[key], f'gen{g}: {key}'
    # Every setting of the role (teacher / students) is the one the stage trained with.
    for key in sorted(ROLE_FIELDS):
      assert training[key] == config[role + key], f'gen{g}: {role}{key}'
    assert training['resolution'] == config[role + 'resolution'] == model.resolution
    if g == 0:
      assert row['num_pseudo_labels'] == 0
      assert training['pseudo'] is None
      assert training['randaug_layers'] == config['teacher.randaug_layers']
      assert training['epochs'] == config['teacher.epochs']
      assert training['train_steps'] == config['teacher.train_steps']
    else:
      # Students: trained on the previous generation's balanced pseudo-labels, with noise; with
      # filter_once, after the first student on the previous teacher's re-labeling of gen0's
      # balanced set.
      prev = work / f'gen{g - 1}'
      label_stats = json.loads((prev / 'pseudo' / 'stats.json').read_text())
      relabel = config['filter_once'] and g >= 2
      filter_stats = json.loads(((work / 'gen0' if relabel else prev) / 'balanced' /
                                 'stats.json').read_text())
      assert label_stats['label_type'] == config['label.label_type']
      assert label_stats['top_k'] == config['label.top_k']
      assert filter_stats['threshold'] == config['filter.threshold']
      assert filter_stats['per_class'] == config['filter.per_class']
      if relabel:  # the fixed balanced set, every record once, and nothing filtered again
        assert label_stats['count'] == filter_stats['num_output'] == row['num_pseudo_labels']
        assert not (prev / 'balanced').exists()
        assert training['pseudo'].startswith('pseudo:' + str(prev / 'pseudo'))
      else:
        assert label_stats['count'] == num_unlabeled  # every unlabeled image labeled once
        print(f'{recipe} gen{g - 1}: {filter_stats["num_above_threshold"]} of '
              f'{filter_stats["num_input"]} pseudo-labels above {filter_stats["threshold"]}')
        assert row['num_pseudo_labels'] == filter_stats['num_output'] > 0
        if config['filter.per_class']:  # K per class that has any pseudo-label above threshold
          present = sum(1 for c in filter_stats['class_counts_above_threshold'] if c)
          assert filter_stats['num_output'] == config['filter.per_class'] * present
        assert training['pseudo'].startswith('pseudo:' + str(prev / 'balanced'))
      assert training['unlabeled_ratio'] == config['student.unlabeled_ratio']
      assert training['randaug_layers'] == config['student.randaug_layers']
      if config['student.randaug_layers']:
        assert training['randaug_magnitude'] == config['student.randaug_magnitude']
      for key in ('dropout', 'drop_path_rate'):
        if config[f'student.{key}'] is not None:
          assert training[key] == config[f'student.{key}'] == getattr(model, key)
      if config['student_init_from_teacher']:
        assert training['init_checkpoint'] == str(prev / 'model')
      if config['student.train_steps']:
        assert training['train_steps'] == config['student.train_steps']
  report_md = (work / 'report.md').read_text().splitlines()
  assert sum(line.startswith('|') for line in report_md) == generations + 3
  return config, report


# ----------------------------------------------------------------------------------------------
# Test data.

def _link_subset(source, dest, per_class, classes=None):
  """dest/<class>/<file>: links to the first `per_class` files of each (or each named) class."""
  for cls in sorted(source.iterdir()):
    if classes is None or cls.name in classes:
      (dest / cls.name).mkdir(parents=True)
      for f in sorted(cls.iterdir())[:per_class]:
        (dest / cls.name / f.name).symlink_to(f)


@pytest.fixture(scope='module')
def cifar10_subset(cifar10_small, tmp_path_factory):
  """Links to real CIFAR-10 JPEGs: train/<class>/ (the first 60 of each class) and test/<class>/
  (the first 30)."""
  root = tmp_path_factory.mktemp('cifar10_subset')
  _link_subset(cifar10_small / 'train', root / 'train', TRAIN_PER_CLASS)
  _link_subset(cifar10_small / 'test', root / 'test', TEST_PER_CLASS)
  return root


@pytest.fixture(scope='module')
def unlabeled_spec(cifar10_small):
  """images: over 200 real CIFAR JPEGs of all 10 classes, none of them in the labeled data."""
  return f'images:{cifar10_small}/{UNLABELED_GLOB}'


@pytest.fixture(scope='module')
def imagenet_records(cifar10_small, tmp_path_factory):
  """ImageNet-format shards written by tools/make_tfrecords.py's writer from real CIFAR-10 JPEGs
  of IMAGENET_CLASSES: train-0000N-of-00004 (20 per class) and validation-0000N-of-00002 (30 per
  class).  Written in this process (the tool's binary runs end to end in test_make_tfrecords.py;
  here it would only start TensorFlow twice more)."""
  trees = tmp_path_factory.mktemp('imagenet_trees')
  _link_subset(cifar10_small / 'train', trees / 'train', IMAGENET_TRAIN_PER_CLASS,
               IMAGENET_CLASSES)
  _link_subset(cifar10_small / 'test', trees / 'validation', TEST_PER_CLASS, IMAGENET_CLASSES)
  out = tmp_path_factory.mktemp('imagenet_records')
  for prefix, shards in (('train', 4), ('validation', 2)):
    imagenet_records_lib.write_imagenet_records(trees / prefix, out, prefix=prefix,
                                                num_shards=shards, num_workers=1)
  names = sorted(p.name for p in out.iterdir())
  assert names == [f'train-{i:05d}-of-00004' for i in range(4)] + ['train.manifest.json'] + [
      f'validation-{i:05d}-of-00002' for i in range(2)] + ['validation.manifest.json']
  manifest = json.loads((out / 'train.manifest.json').read_text())
  assert manifest['num_examples'] == IMAGENET_TRAIN and manifest['complete'] is True
  assert manifest['class_names'] == list(IMAGENET_CLASSES)
  return out


def _digits_32():
  """scikit-learn's 1797 handwritten digits as 32x32 RGB uint8 images (light on dark, and dark
  on light for every other one, as house numbers come both ways) and their labels."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.kron(digits.images, np.ones((4, 4))) * (255.0 / 16.0)  # 8x8 -> 32x32
  images[1::2] = 255.0 - images[1::2]
  rgb = np.repeat(images[..., None], 3, axis=-1) * np.array([1.0, 0.9, 0.8])  # a faint tint
  return rgb.round().clip(0, 255).astype(np.uint8), digits.target.astype(np.int64)


@pytest.fixture(scope='module')
def svhn_data_dir(tmp_path_factory):
  """A tensorflow-datasets data dir holding a prepared 'svhn_cropped' (train 300, extra 400,
  test 200): the official builder's name, version, features and splits, with digit images in
  place of the downloaded .mat files, so that `tfds.builder('svhn_cropped', data_dir=...)` in the
  binary's process finds it prepared and never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  official = tfds.builder_cls('svhn_cropped')
  images, labels = _digits_32()
  first = {'train': 0, 'extra': SVHN_SIZES['train'],
           'test': SVHN_SIZES['train'] + SVHN_SIZES['extra']}

  with tfds.core.registered.skip_registration():
    class LocalSvhnCropped(official):
      name = 'svhn_cropped'

      def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split_prefix=f'{split}_', filepath=split)
                for split in SVHN_SIZES}

      def _generate_examples(self, split_prefix, filepath):
        for i in range(SVHN_SIZES[filepath]):
          j = first[filepath] + i
          yield i, {'image': images[j], 'label': labels[j], 'id': f'{split_prefix}{i:06d}'}

  data_dir = tmp_path_factory.mktemp('tfds')
  LocalSvhnCropped(data_dir=str(data_dir)).download_and_prepare()
  assert (data_dir / 'svhn_cropped' / str(official.VERSION) / 'dataset_info.json').exists()
  return data_dir


# ----------------------------------------------------------------------------------------------
# The runs: each recipe's binary, its flagfile and the size and data overrides.  They start as
# soon as the module's first test asks for them, JOBS at a time (the binaries spend much of their
# time in single-threaded graph tracing, so two share two cores well).

JOBS = int(os.environ.get('NS_RECIPE_JOBS', '2'))
RUN_TIMEOUT = 900  # seconds per run
TINY_MODEL = ['--widths=0.25', '--depths=0.25']
SHARDS = ['--label.num_shards=2', '--filter.num_shards=2', '--filter.per_class=30']
BATCHES = ['--eval_batch_size=128', '--label.batch_size=256']


def _imagenet_overrides(records, unlabeled, batch):
  return [f'--labeled=tfrecord:{records}/train-*', f'--eval_data=tfrecord:{records}/validation-*',
          f'--unlabeled={unlabeled}', *TINY_MODEL, '--resolution=32', f'--batch_size={batch}',
          *BATCHES, *SHARDS]


# name: (binary, flagfile, the data fixtures it needs, overrides(**data)); the order is the
# order the runs start in (the longest early).
RECIPES = {
    'demo': ('pipeline', 'demo.cfg', (), lambda: [
        '--teacher.train_steps=40', '--student.train_steps=20', '--batch_size=16', *BATCHES]),
    'imagenet_b7_l2_noisy': (
        'pipeline', 'imagenet_b7_l2_noisy.cfg', ('imagenet_records', 'unlabeled_spec'),
        lambda imagenet_records, unlabeled_spec: [
            *_imagenet_overrides(imagenet_records, unlabeled_spec, 16), '--teacher.epochs=5',
            '--student.train_steps=10',
            # Two of the recipe's three student rounds (B7 -> L2 -> L2): the second round already
            # takes a student as its teacher; a third repeats it at the suite's expense.
            '--generations=2',
            '--models=efficientnet-b7,efficientnet-l2-475,efficientnet-l2-475']),
    'svhn': ('pipeline', 'svhn.cfg', ('svhn_data_dir',), lambda svhn_data_dir: [
        f'--data_dir={svhn_data_dir}', *TINY_MODEL, '--resolution=16', '--batch_size=64',
        *BATCHES, '--teacher.epochs=6', '--student.epochs=2', *SHARDS]),
    'imagenet_b0_noisy': (
        'pipeline', 'imagenet_b0_noisy.cfg', ('imagenet_records', 'unlabeled_spec'),
        lambda imagenet_records, unlabeled_spec: [
            *_imagenet_overrides(imagenet_records, unlabeled_spec, 16), '--teacher.epochs=5',
            '--student.train_steps=10']),
    'cifar10_4000': ('pipeline', 'cifar10_4000.cfg', ('cifar10_subset',), lambda cifar10_subset: [
        f'--labeled=folder:{cifar10_subset}/train', f'--eval_data=folder:{cifar10_subset}/test',
        '--labeled_per_class=20', *TINY_MODEL, '--resolution=16', *BATCHES,
        '--teacher.epochs=10', '--student.epochs=2', *SHARDS]),
    'cifar10_supervised': ('train', 'cifar10_supervised.cfg', ('cifar10_subset',),
                           lambda cifar10_subset: [
        f'--labeled=folder:{cifar10_subset}/train', f'--eval_data=folder:{cifar10_subset}/test',
        '--width=0.25', '--depth=0.25', '--resolution=16', '--batch_size=32',
        '--eval_batch_size=128', '--epochs=1']),
    # The recipe reads tfds:imagenet2012; here the same binary reads the ImageNet-format records
    # (1-based labels: --label_offset=1).  --strategy=default: there is no TPU here.
    'imagenet_b0_supervised': ('train', 'imagenet_b0_supervised.cfg', ('imagenet_records',),
                               lambda imagenet_records: [
        f'--labeled=tfrecord:{imagenet_records}/train-*',
        f'--eval_data=tfrecord:{imagenet_records}/validation-*', '--label_offset=1',
        '--width=0.25', '--depth=0.25', '--resolution=32', '--batch_size=16',
        '--eval_batch_size=128', '--epochs=2', '--strategy=default']),
}


class Run:
  """One finished recipe run: its output dir, the overrides, the process and its wall time."""

  def __init__(self, name, out, overrides, proc, seconds, cpu_seconds):
    self.name, self.out, self.overrides, self.proc = name, out, overrides, proc
    self.seconds, self.cpu_seconds = seconds, cpu_seconds

  def check_ok(self):
    assert self.proc.returncode == 0, (
        f'{self.name}: {" ".join(map(str, self.proc.args))}\nexit {self.proc.returncode} after '
        f'{self.seconds:.0f} s:\n{self.proc.stderr[-5000:]}')


def _launch(name, out, overrides):
  """Runs the recipe's binary; returns its Run (with wall and CPU seconds: the CPU time tells
  what a run costs on an idle machine, the wall time depends on what else runs)."""
  binary, flagfile, _, _ = RECIPES[name]
  target = '--work_dir' if binary == 'pipeline' else '--model_dir'
  cmd = [sys.executable, '-m', f'noisy_student_tf.cli.{binary}',
         f'--flagfile={FLAGS_DIR / flagfile}', f'{target}={out}', *overrides]
  logs = out.parent / f'{out.name}.stdout', out.parent / f'{out.name}.stderr'
  start = time.time()
  with open(logs[0], 'w') as stdout, open(logs[1], 'w') as stderr:
    popen = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr)
  timer = threading.Timer(RUN_TIMEOUT, popen.kill)
  timer.start()
  try:
    _, status, usage = os.wait4(popen.pid, 0)  # like popen.wait(), plus the child's CPU time
  finally:
    timer.cancel()
  popen.returncode = os.waitstatus_to_exitcode(status)
  proc = subprocess.CompletedProcess(cmd, popen.returncode, logs[0].read_text(),
                                     logs[1].read_text())
  return Run(name, out, overrides, proc, time.time() - start, usage.ru_utime + usage.ru_stime)


@pytest.fixture(scope='module')
def recipe_runs(request, tmp_path_factory):
  """name -> Run (waits for it); starts the runs of every selected test of this module."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  selected = {getattr(item, 'originalname', '').removeprefix('test_')
              for item in request.session.items
              if getattr(getattr(item, 'module', None), '__name__', None) == __name__}
  executor = concurrent.futures.ThreadPoolExecutor(JOBS)
  futures = {}

  def submit(name):
    _, _, needs, make = RECIPES[name]
    try:  # the data fixtures are built here, in order, while the first runs already go
      data = {fixture: request.getfixturevalue(fixture) for fixture in needs}
    except (Exception, pytest.fail.Exception) as e:  # pylint: disable=broad-except
      futures[name] = concurrent.futures.Future()  # only the tests needing it fail
      futures[name].set_exception(e)
      return
    out = tmp_path_factory.mktemp(name) / ('w' if RECIPES[name][0] == 'pipeline' else 'm')
    futures[name] = executor.submit(_launch, name, out, make(**data))

  for name in RECIPES:
    if name in selected:
      submit(name)

  def get(name):
    if name not in futures:
      submit(name)
    run = futures[name].result()
    print(f'{name}: {run.seconds:.1f} s ({run.cpu_seconds:.1f} s CPU)')
    run.check_ok()
    return run

  yield get
  executor.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# ns-pipeline recipes.

def test_demo(recipe_runs):
  run = recipe_runs('demo')
  work = run.out
  assert 'student 1' in run.proc.stdout
  config, _ = check_pipeline_run(work, 'demo.cfg', run.overrides, generations=1,
                                 eval_examples=360, num_unlabeled=1437 - 150)
  assert config['flip'] is False and _training(work / 'gen1' / 'model')['flip'] is False
  split = json.loads((work / 'data' / 'split.json').read_text())
  assert split['class_counts']['labeled'] == [15] * 10
  assert (split['num_labeled'], split['num_unlabeled']) == (150, 1287)


def test_cifar10_4000(recipe_runs):
  run = recipe_runs('cifar10_4000')
  work = run.out
  config, _ = check_pipeline_run(work, 'cifar10_4000.cfg', run.overrides, generations=1,
                                 eval_examples=10 * TEST_PER_CLASS,
                                 num_unlabeled=10 * (TRAIN_PER_CLASS - 20))
  assert config['student_init_from_teacher'] is True and config['batch_size'] == 64
  assert _training(work / 'gen0' / 'model')['flip'] is True


def test_svhn(recipe_runs):
  run = recipe_runs('svhn')
  work = run.out
  config, _ = check_pipeline_run(work, 'svhn.cfg', run.overrides, generations=1,
                                 eval_examples=SVHN_SIZES['test'],
                                 num_unlabeled=SVHN_SIZES['extra'])
  assert config['labeled'] == 'tfds:svhn_cropped:train'
  assert config['unlabeled'] == 'tfds:svhn_cropped:extra'
  assert config['eval_data'] == 'tfds:svhn_cropped:test'
  assert config['flip'] is False and config['precision'] == 'mixed_bfloat16'
  for g in (0, 1):
    assert _training(work / f'gen{g}' / 'model')['flip'] is False
  assert model_dir_lib.read_config(str(work / 'gen1' / 'model')).model.name == 'efficientnet-b1'


def _check_imagenet(work, config):
  assert config['label_offset'] == 1 and config['num_classes'] is None
  assert list((work / 'data' / 'source_stats').glob('records-*.json')), (
      'the tfrecord: sources were not scanned into W/data/source_stats')
  assert config['label.top_k'] == 10 and config['precision'] == 'mixed_bfloat16'
  training = _training(work / 'gen0' / 'model')
  assert training['effective']['labeled_examples'] == IMAGENET_TRAIN


def test_imagenet_b0_noisy(recipe_runs):
  run = recipe_runs('imagenet_b0_noisy')
  config, _ = check_pipeline_run(run.out, 'imagenet_b0_noisy.cfg', run.overrides, generations=1,
                                 eval_examples=IMAGENET_EVAL, num_unlabeled=NUM_UNLABELED,
                                 num_classes=3)
  _check_imagenet(run.out, config)


def test_imagenet_b7_l2_noisy(recipe_runs):
  run = recipe_runs('imagenet_b7_l2_noisy')
  work = run.out
  config, _ = check_pipeline_run(work, 'imagenet_b7_l2_noisy.cfg', run.overrides,
                                 generations=2, eval_examples=IMAGENET_EVAL,
                                 num_unlabeled=NUM_UNLABELED, num_classes=3)
  _check_imagenet(work, config)
  names = [model_dir_lib.read_config(str(work / f'gen{g}' / 'model')).model.name
           for g in range(3)]
  assert names == ['efficientnet-b7'] + ['efficientnet-l2-475'] * 2
  assert config['filter_once'] is True  # the official procedure: filter once, re-label after
  teacher = _training(work / 'gen0' / 'model')
  assert (teacher['randaug_layers'], teacher['randaug_magnitude']) == (2, 27)  # a noised teacher


# ----------------------------------------------------------------------------------------------
# ns-train recipes.

def check_train_run(run, recipe, eval_examples):
  model_dir = run.out
  result = json.loads((model_dir / 'train_result.json').read_text())
  assert json.loads(run.proc.stdout[run.proc.stdout.index('{'):]) == result
  assert model_dir_lib.is_complete(str(model_dir))
  assert 0.0 <= result['top1'] <= result['top5'] <= 1.0
  assert result['num_eval_examples'] == eval_examples
  training = _training(model_dir)
  assert_recipe_reached(recipe, run.overrides, training)
  assert result['step'] == training['effective']['total_steps']
  return result, training


def test_cifar10_supervised(recipe_runs):
  run = recipe_runs('cifar10_supervised')
  result, _ = check_train_run(run, 'cifar10_supervised.cfg', 10 * TEST_PER_CLASS)
  assert result['step'] == 19  # 1 epoch of 600 images at 32, rounded up


def test_imagenet_b0_supervised(recipe_runs):
  run = recipe_runs('imagenet_b0_supervised')
  result, training = check_train_run(run, 'imagenet_b0_supervised.cfg', IMAGENET_EVAL)
  assert result['step'] == 8  # 2 epochs of 60 records at 16, rounded up
  assert training['sync_batchnorm'] is True and training['precision'] == 'mixed_bfloat16'
  assert training['label_offset'] == 1 and training['strategy'] == 'default'
