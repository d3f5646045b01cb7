"""tfrecord: sources that train: class and example counts from one cached scan of the labels,
labels checked against --label_offset and --num_classes before any work, and ns-train on
ImageNet-format (1-based) records end to end."""

import json
import os
import subprocess
import sys

import pytest

from conftest import TINY
from noisy_student_tf.data import imagenet_records, record_stats, sources
from noisy_student_tf.train import trainer


@pytest.fixture(scope='module')
def records(cifar10_small, tmp_path_factory):
  """Real CIFAR-10 JPEGs as ImageNet-format shards: train (1-based labels) and 0-based ones."""
  out = tmp_path_factory.mktemp('records')
  imagenet_records.write_imagenet_records(os.path.join(str(cifar10_small), 'train'), str(out),
                                          prefix='train', num_shards=4, num_workers=1)
  imagenet_records.write_imagenet_records(os.path.join(str(cifar10_small), 'test'), str(out),
                                          prefix='validation', num_shards=2, num_workers=1)
  imagenet_records.write_imagenet_records(os.path.join(str(cifar10_small), 'test'), str(out),
                                          prefix='zero_based', num_shards=2, num_workers=1,
                                          label_offset=0)
  return str(out)


def test_scan_counts_examples_and_classes_and_is_cached(records, tmp_path, monkeypatch):
  source = sources.open_source(f'tfrecord:{records}/train-*', label_offset=1)
  assert source.num_classes is None and source.num_examples is None
  described = record_stats.describe(source, label_offset=1, cache_dir=str(tmp_path))
  assert (described.num_classes, described.num_examples) == (10, 2000)
  assert sum(described.records.counts) == 2000 and len(described.records.counts) == 4
  stats = record_stats.scan_records(source.records.files, str(tmp_path))
  assert stats.label_counts == {c: 200 for c in range(1, 11)}
  assert record_stats.class_counts(stats, 1, 10) == [200] * 10
  assert len(os.listdir(tmp_path)) == 1  # one cache file
  # The second time, the cache answers: no record is read.
  monkeypatch.setattr(record_stats, '_scan', lambda *a: pytest.fail('scanned again'))
  assert record_stats.describe(source, label_offset=1, cache_dir=str(tmp_path)).num_examples == 2000
  monkeypatch.undo()
  # Sharded by record (fewer files than shards): each share is counted exactly.
  shares = [record_stats.describe(sources.open_source(f'tfrecord:{records}/validation-*',
                                                      label_offset=1, num_shards=3, shard_index=i),
                                  label_offset=1, cache_dir=str(tmp_path)).num_examples
            for i in range(3)]
  assert shares == [334, 333, 333]


def test_label_offset_and_num_classes_mistakes_name_the_source_and_value(records, tmp_path):
  zero_based = f'tfrecord:{records}/zero_based-*'
  with pytest.raises(ValueError, match=r"zero_based-\*.*stored label 0 .*--label_offset=1.*"
                                       r"--label_offset=0"):
    record_stats.describe(sources.open_source(zero_based, label_offset=1), label_offset=1,
                          cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"train-\*.*stored label 10 \(class 9.*--num_classes=5"):
    record_stats.describe(sources.open_source(f'tfrecord:{records}/train-*', label_offset=1),
                          label_offset=1, num_classes=5, cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match='give --num_classes'):
    record_stats.describe(sources.open_source(f'tfrecord:{records}/train-*', label_offset=1),
                          label_offset=1, scan=False)
  # Given a count and no scan, it is taken as it is.
  trusted = record_stats.describe(sources.open_source(f'tfrecord:{records}/train-*'),
                                  num_classes=10, scan=False)
  assert trusted.num_classes == 10 and trusted.num_examples is None


def _ns_train(*args):
  return subprocess.run([sys.executable, '-m', 'noisy_student_tf.cli.train', *args],
                        capture_output=True, text=True, timeout=600)


def test_ns_train_on_one_based_imagenet_records(records, tmp_path):
  model_dir = tmp_path / 'model'
  config = trainer.TrainConfig(
      model_dir=str(model_dir), labeled=f'tfrecord:{records}/train-*', label_offset=1,
      eval_data=f'tfrecord:{records}/validation-*', model='b0', epochs=0.05, batch_size=25,
      eval_batch_size=250, optimizer='momentum', base_learning_rate=0.1, warmup_epochs=0,
      checkpoint_every=100, log_every=2, progress='log', **TINY)
  result = trainer.train(config)
  assert result['step'] == 4  # ceil(0.05 epochs x 2000 examples / 25): the count is known
  assert result['num_eval_examples'] == 1000
  saved = json.loads((model_dir / 'config.json').read_text())
  assert saved['model']['num_classes'] == 10
  assert saved['training']['effective']['labeled_examples'] == 2000
  assert saved['training']['flip'] is True
  assert os.listdir(model_dir / 'source_stats')  # the scan is cached beside the model


def test_ns_train_stops_before_any_work_on_bad_labels(records, tmp_path):
  common = ['--model=b0', '--width=0.25', '--depth=0.25', '--resolution=32', '--small_image',
            '--train_steps=2', '--batch_size=8']
  proc = _ns_train(*common, f'--labeled=tfrecord:{records}/zero_based-*', '--label_offset=1',
                   f'--model_dir={tmp_path / "a"}')
  assert proc.returncode != 0
  assert 'zero_based-*' in proc.stderr and 'stored label 0' in proc.stderr
  assert not (tmp_path / 'a' / 'ckpt').exists()
  proc = _ns_train(*common, f'--labeled=tfrecord:{records}/train-*', '--label_offset=1',
                   '--num_classes=5', f'--model_dir={tmp_path / "b"}')
  assert proc.returncode != 0
  assert 'train-*' in proc.stderr and 'stored label 10' in proc.stderr
  assert '--num_classes=5' in proc.stderr
  assert not (tmp_path / 'b' / 'ckpt').exists()


def test_one_thousand_classes_one_based_class_ordered_records(tmp_path):
  """ImageNet's shape: 1000 classes stored 1..1000, shards in class order."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.data import order  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'tree'
  png = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()
  for c in range(1000):
    (folder / f'n{c:08d}').mkdir(parents=True)
    for i in range(3):
      (folder / f'n{c:08d}' / f'{i}.png').write_bytes(png)
  imagenet_records.write_imagenet_records(str(folder), str(tmp_path / 'rec'), prefix='train',
                                          num_shards=4, shuffle=False, num_workers=1)
  spec = f'tfrecord:{tmp_path}/rec/train-*'
  source = record_stats.describe(sources.open_source(spec, label_offset=1), label_offset=1,
                                 cache_dir=str(tmp_path / 'cache'))
  assert (source.num_classes, source.num_examples) == (1000, 3000)
  with pytest.raises(ValueError, match=r'stored label 1000 \(class 999.*--num_classes=999'):
    record_stats.describe(sources.open_source(spec, label_offset=1), label_offset=1,
                          num_classes=999, cache_dir=str(tmp_path / 'cache'))
  labels = np.fromiter(order.shuffled_stream(source, seed=0, shuffle_buffer=1).map(
      lambda d: d['label']).take(3000).as_numpy_iterator(), np.int64)
  assert labels.min() == 0 and labels.max() == 999
  assert np.bincount(labels, minlength=1000).tolist() == [3] * 1000  # one epoch, each once
  # Without the element buffer, the first 1000 drawn cover 500 classes: 334 in class order, ~704
  # for a uniform draw; reading 256 chunks of 12 records in parallel sits between the two.
  assert len(np.unique(labels[:1000])) > 450
