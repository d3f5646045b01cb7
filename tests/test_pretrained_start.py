"""ns-pipeline from published weights (issue 14): an official-format 1000-class Noisy Student
checkpoint -> tools' conversion -> flags/custom_from_pretrained.cfg on a 10-class folder of real
CIFAR-10 JPEGs.  Every teacher weight except the classifier starts equal to the checkpoint's."""

import os

import numpy as np
import pytest
from absl import flags

from noisy_student_tf import convert, model_dir as model_dir_lib
from noisy_student_tf.cli import pipeline as cli
from noisy_student_tf.selftrain import pipeline
from noisy_student_tf.train import trainer
from test_convert import make_official_tensors, saver_write  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """A model dir converted from an official-layout 1000-class B0 Noisy Student checkpoint."""
  folder = tmp_path_factory.mktemp('noisy_student_efficientnet-b0')
  saver_write(str(folder / 'model.ckpt'), make_official_tensors('efficientnet-b0', seed=3))
  out = tmp_path_factory.mktemp('models') / 'ns-b0'
  convert.convert_checkpoint(str(folder), str(out))
  return str(out)


def _my_folder(cifar10_small, root, train_per_class=30, test_per_class=20):
  """root/{train,test}/<class>/: links to real CIFAR-10 JPEGs, a user's small 10-class folder."""
  for split, n in (('train', train_per_class), ('test', test_per_class)):
    for cls in sorted((cifar10_small / split).iterdir()):
      (root / split / cls.name).mkdir(parents=True)
      for f in sorted(cls.iterdir())[:n]:
        (root / split / cls.name / f.name).symlink_to(f)
  return root


def test_pipeline_from_published_weights_on_my_classes(converted, cifar10_small, tmp_path,
                                                       monkeypatch):
  mine = _my_folder(cifar10_small, tmp_path / 'mine')
  starts = {}
  copy = trainer._copy_by_path  # pylint: disable=protected-access

  def recording_copy(model, values, what):
    n = copy(model, values, what)
    if what.startswith('init_checkpoint'):
      starts[model.name + str(len(starts))] = {v.path: np.array(v.numpy()) for v in model.weights}
    return n
  monkeypatch.setattr(trainer, '_copy_by_path', recording_copy)

  work = tmp_path / 'w'
  args = ['ns-pipeline', f'--flagfile={REPO}/flags/custom_from_pretrained.cfg',
          f'--work_dir={work}', f'--init_checkpoint={converted}',
          f'--labeled=folder:{mine}/train', f'--eval_data=folder:{mine}/test',
          '--labeled_per_class=10', '--resolution=32', '--batch_size=16', '--eval_batch_size=250',
          '--teacher.epochs=0.5', '--student.epochs=0.2', '--unlabeled_ratio=1',
          '--label.batch_size=250', '--label.num_shards=2', '--filter.num_shards=2',
          '--checkpoint_every=3', '--filter.threshold=0.0']
  try:
    FLAGS(args)
    config = cli.make_config()
  finally:
    FLAGS.unparse_flags()
  assert config.train_config(0).init_checkpoint == converted
  assert config.train_config(1).init_checkpoint == converted
  rows = pipeline.run_pipeline(config)

  official, _ = model_dir_lib.load_model(converted, weights='ema')
  reference = {v.path: v.numpy() for v in official.weights}
  teacher_start = next(iter(starts.values()))
  different = [p for p, value in teacher_start.items()
               if p not in reference or reference[p].shape != value.shape
               or not np.array_equal(reference[p], value)]
  assert sorted(different) == ['logits/bias', 'logits/kernel'], different
  assert teacher_start['logits/kernel'].shape[-1] == 10 and reference['logits/kernel'].shape[-1] == 1000
  assert len(starts) == 2  # the student started from the published weights too
  teacher = model_dir_lib.read_config(config.model_dir(0))
  assert teacher.model.num_classes == 10
  assert teacher.input == model_dir_lib.read_config(converted).input  # its own preprocessing
  assert [r['generation'] for r in rows] == [0, 1] and rows[1]['num_pseudo_labels'] > 0
