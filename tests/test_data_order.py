"""Training order at the size where a shuffle buffer alone breaks: the 50,000 CIFAR-10 training
JPEGs as a class-ordered folder, the same images as class-ordered TFRecord shards, and the
pseudo-label shards ns-label and ns-filter write from a class-ordered source.  Every batch of 128
among the first 100 must hold >= 8 of the 10 classes, and the class counts over those batches
must pass a chi-square test of uniformity (p > 0.001).  Also: the per-epoch permutation is a
permutation, seeded, disjoint across shards; subsets are stratified samples, not the first N."""

import collections
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats

from conftest import TINY  # noqa: F401  (tiny-model convention of the suite)
from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import imagenet_records, order, pipeline, record_stats, sources
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from test_label import make_teacher

BATCH = 128
BATCHES = 100


def mixing(batches, num_classes=10):
  """(fewest classes in one batch, chi-square p-value of the class counts) of [N, B] labels."""
  batches = np.asarray(batches)
  fewest = min(len(np.unique(b)) for b in batches)
  counts = np.bincount(batches.ravel(), minlength=num_classes)
  return fewest, scipy_stats.chisquare(counts).pvalue, counts


def assert_mixed(batches, what):
  fewest, p, counts = mixing(batches)
  print(f'{what}: fewest classes in a batch {fewest}, chi-square p {p:.3g}, counts {counts}')
  assert fewest >= 8, f'{what}: a batch of {BATCH} holds only {fewest} classes ({counts})'
  assert p > 0.001, f'{what}: class counts {counts} are not uniform (p={p:.2g})'


def first_batches_of_labels(ds, label_of=lambda d: d['label']):
  ds = ds.map(label_of).batch(BATCH).take(BATCHES)
  return np.stack(list(ds.as_numpy_iterator()))


@pytest.fixture(scope='module')
def train_folder(cifar10_dir):
  return os.path.join(str(cifar10_dir), 'train')


@pytest.fixture(scope='module')
def class_ordered_records(train_folder, tmp_path_factory):
  """The 50,000 training JPEGs as 10 TFRecord shards in class order (1-based labels)."""
  out = str(tmp_path_factory.mktemp('class_ordered_records'))
  imagenet_records.write_imagenet_records(train_folder, out, prefix='train', num_shards=10,
                                          shuffle=False, num_workers=1)
  return out


def test_folder_of_50000_class_ordered_jpegs_trains_on_mixed_batches(train_folder):
  source = sources.open_source(f'folder:{train_folder}')
  assert source.num_examples == 50000
  # The old order (a 10,000-element buffer over the class-ordered list) fails the criterion,
  # which is what makes this test able to fail.
  old = source.dataset.shuffle(10000, seed=0).repeat()
  assert mixing(first_batches_of_labels(old))[0] <= 4
  ds = pipeline.make_train_dataset(
      source, batch_size=BATCH, resolution=32, num_classes=10,
      convention=model_dir_lib.InputConvention(), small_image=True, seed=0)
  labels = [np.argmax(t, 1) for _, t, _ in ds.take(BATCHES).as_numpy_iterator()]
  assert_mixed(labels, 'folder: 50,000 CIFAR-10 JPEGs')


@pytest.mark.parametrize('num_shards', [10, 1])
def test_class_ordered_record_shards_train_on_mixed_batches(train_folder, tmp_path, num_shards,
                                                            class_ordered_records):
  if num_shards == 1:  # one 50,000-record file: only reading it in chunks can mix it
    # The 10 class-ordered shards end to end: without shuffling the writer deals contiguous
    # slices, and a TFRecord file is its framed records in order, so this is byte for byte the
    # file write_imagenet_records(num_shards=1, shuffle=False) writes (without reading and
    # framing the 50,000 JPEGs a second time).
    directory = str(tmp_path)
    with open(os.path.join(directory, 'train-00000-of-00001'), 'wb') as out:
      for i in range(10):
        with open(os.path.join(class_ordered_records, f'train-{i:05d}-of-00010'), 'rb') as f:
          shutil.copyfileobj(f, out)
  else:
    directory = class_ordered_records
  spec = f'tfrecord:{directory}/train-*'
  source = record_stats.describe(sources.open_source(spec, label_offset=1), label_offset=1,
                                 cache_dir=str(tmp_path / 'cache'))
  assert (source.num_examples, source.num_classes) == (50000, 10)
  first = next(source.dataset.batch(5000).as_numpy_iterator())['label']
  assert len(np.unique(first)) == 1  # the shards really are in class order
  assert_mixed(first_batches_of_labels(order.shuffled_stream(source, seed=0)),
               f'tfrecord: {num_shards} class-ordered shards')


def test_pseudo_label_shards_of_a_class_ordered_source_train_on_mixed_batches(
    train_folder, tmp_path):
  # 20,000 of the images (2000 per class, linked), twice the buffer: labeling all 50,000 with
  # even the tiniest teacher takes minutes on 2 cores.
  unlabeled = tmp_path / 'unlabeled'
  for cls in sorted(os.listdir(train_folder)):
    os.makedirs(unlabeled / cls)
    for name in sorted(os.listdir(os.path.join(train_folder, cls)))[:2000]:
      os.symlink(os.path.join(train_folder, cls, name), unlabeled / cls / name)
  teacher = make_teacher(tmp_path / 'teacher', resolution=8)
  pseudo_dir, balanced_dir = str(tmp_path / 'pseudo'), str(tmp_path / 'balanced')
  label_lib.label(label_lib.LabelConfig(model_dir=teacher, unlabeled=f'folder:{unlabeled}',
                                        output_dir=pseudo_dir, num_shards=8, batch_size=512))
  filter_lib.filter_records(filter_lib.FilterConfig(input=pseudo_dir, output_dir=balanced_dir,
                                                    threshold=0.0, num_shards=8))
  class_of = {n: i for i, n in enumerate(sorted(os.listdir(train_folder)))}
  names = tf.constant(sorted(class_of))

  def true_class(d):  # the source id is the relative path <class>/<file>
    folder = tf.strings.split(d['source_id'], '/')[0]
    return tf.argmax(tf.cast(tf.equal(names, folder), tf.int32), output_type=tf.int64)

  for directory in (pseudo_dir, balanced_dir):
    source = sources.open_source(f'pseudo:{directory}/*.tfrecord')
    assert source.records.counts is not None and sum(source.records.counts) == 20000
    fewest, p, _ = mixing(first_batches_of_labels(source.dataset, true_class))
    assert fewest < 8 or p < 1e-6  # as written the shards are class-ordered: read in order, fails
    assert_mixed(first_batches_of_labels(order.shuffled_stream(source, seed=1), true_class),
                 f'pseudo: {os.path.basename(directory)} shards')


def test_epoch_order_is_a_seeded_permutation_within_each_shard(cifar10_small):
  spec = f'folder:{cifar10_small}/train'
  whole = sources.open_source(spec)
  n = whole.num_examples

  def epochs(source, seed, k=2):
    ds = order.shuffled_stream(source, seed=seed, shuffle_buffer=1).map(lambda d: d['source_id'])
    ids = [x.decode() for x in ds.take(k * source.num_examples).as_numpy_iterator()]
    m = source.num_examples
    return [ids[i * m:(i + 1) * m] for i in range(k)]

  first, second = epochs(whole, seed=3)
  all_ids = {d['source_id'].decode() for d in whole.dataset.as_numpy_iterator()}
  assert set(first) == set(second) == all_ids and len(first) == n  # each epoch: every file once
  assert first != second  # reshuffled every epoch
  assert epochs(whole, seed=3) == [first, second]  # the same seed, the same order
  assert epochs(whole, seed=4)[0] != first
  shard_ids = [set(epochs(sources.open_source(spec, num_shards=3, shard_index=i), seed=3, k=1)[0])
               for i in range(3)]
  assert set.union(*shard_ids) == all_ids and sum(map(len, shard_ids)) == n


def test_record_chunks_cover_every_record_once():
  file_index, start, length = order.record_chunks([50000])
  assert len(file_index) == 256 and length.sum() == 50000  # TARGET_CHUNKS chunks of 196
  assert (start[1:] == start[:-1] + length[:-1]).all()
  # ImageNet's 1024 shards of ~1250 records are read whole.
  fi, st, ln = order.record_chunks([1251] * 1024)
  assert len(fi) == 1024 and (st == 0).all()


def test_sample_is_class_stratified_and_seeded(cifar10_small):
  source = sources.open_source(f'folder:{cifar10_small}/test')  # 100 per class, class order
  sample = order.sample_source(source, 50, seed=0)
  labels = [int(d['label']) for d in sample.dataset.as_numpy_iterator()]
  assert sample.num_examples == 50 and collections.Counter(labels) == {c: 5 for c in range(10)}
  again = order.sample_source(source, 50, seed=0)
  ids = lambda s: [d['source_id'] for d in s.dataset.as_numpy_iterator()]
  assert ids(again) == ids(sample) and ids(order.sample_source(source, 50, seed=1)) != ids(sample)
  # Unlabeled sources: a uniform sample; and labels of record sources read without decoding.
  unlabeled = sources.as_unlabeled(source)
  assert order.sample_source(unlabeled, 37, seed=0).num_examples == 37
  idx = order.stratified_indices([0] * 90 + [1] * 10, 10, seed=0)
  assert np.bincount(np.asarray([0] * 90 + [1] * 10)[idx]).tolist() == [9, 1]
