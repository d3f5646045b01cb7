"""Sources: every kind of spec read from real small data; sharding; per-class splits."""


import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from noisy_student_tf.data import records, sources


def _elements(source):
  return list(source.dataset.as_numpy_iterator())


def test_folder_source_reads_classes_labels_and_original_bytes(cifar10_small):
  root = cifar10_small / 'test'
  s = sources.open_source(f'folder:{root}')
  classes = sorted(p.name for p in root.iterdir())
  assert s.class_names == tuple(classes) and s.num_classes == 10 and s.labeled
  assert s.num_examples == 1000
  els = _elements(s)
  assert len(els) == 1000
  for e in els[::97]:
    sid = e['source_id'].decode()
    cls = sid.split('/')[0]
    assert e['label'] == classes.index(cls)
    assert e['encoded'] == (root / sid).read_bytes()
  assert [e['label'] for e in els] == sorted(e['label'] for e in els)  # source order: by class


def _write_imagenet_records(path, items, with_label=True):
  with tf.io.TFRecordWriter(str(path)) as w:
    for encoded, label, name in items:
      feats = {'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
               'image/filename': tf.train.Feature(bytes_list=tf.train.BytesList(
                   value=[name.encode()]))}
      if with_label:
        feats['image/class/label'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
      w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _cifar_items(cifar10_small, n_per_class=3):
  root = cifar10_small / 'test'
  items = []
  for label, cls in enumerate(sorted(p.name for p in root.iterdir())):
    for f in sorted((root / cls).iterdir())[:n_per_class]:
      items.append((f.read_bytes(), label, f'{cls}/{f.name}'))
  return items


def test_tfrecord_source_applies_label_offset_and_shards(cifar10_small, tmp_path):
  items = _cifar_items(cifar10_small)  # 30 images
  for k in range(3):  # 1-based labels, as in ImageNet records
    _write_imagenet_records(tmp_path / f'train-{k:05d}-of-00003',
                            [(e, l + 1, n) for e, l, n in items[k::3]])
  spec = f'tfrecord:{tmp_path}/train-*'
  s = sources.open_source(spec, label_offset=1)
  els = _elements(s)
  by_name = {n: (e, l) for e, l, n in items}
  assert len(els) == 30
  for e in els:
    encoded, label = by_name[e['source_id'].decode()]
    assert e['encoded'] == encoded and e['label'] == label
  # sharded by file (3 files, 3 shards) and by record (3 files, 4 shards): exact partitions
  for n in (3, 4):
    ids = [e['source_id'] for k in range(n)
           for e in _elements(sources.open_source(spec, num_shards=n, shard_index=k))]
    assert sorted(ids) == sorted(e['source_id'] for e in els)
  # records without labels read as unlabeled
  _write_imagenet_records(tmp_path / 'nolabel', items[:4], with_label=False)
  assert [e['label'] for e in _elements(sources.open_source(f'tfrecord:{tmp_path}/nolabel',
                                                            label_offset=1))] == [-1] * 4


def test_images_source_is_unlabeled_and_shards_exactly(cifar10_small):
  pattern = f'{cifar10_small}/test/*/*.jpg'
  s = sources.open_source(f'images:{pattern}')
  assert not s.labeled and s.num_classes is None and s.num_examples == 1000
  all_ids = [e['source_id'] for e in _elements(s)]
  assert set(e['label'] for e in _elements(s)) == {-1}
  shards = [[e['source_id'] for e in _elements(
      sources.open_source(f'images:{pattern}', num_shards=7, shard_index=k))] for k in range(7)]
  union = [i for shard in shards for i in shard]
  assert len(union) == len(set(union)) == 1000
  assert set(union) == set(all_ids)


def test_digits_splits_are_disjoint_and_complete():
  train = sources.open_source('digits')
  test = sources.open_source('digits:test')
  assert (train.num_examples, test.num_examples) == (1437, 360)
  ids_train = {e['source_id'] for e in _elements(train)}
  ids_test = {e['source_id'] for e in _elements(test)}
  assert not ids_train & ids_test and len(ids_train | ids_test) == 1797
  e = _elements(test)[3]
  image = tf.io.decode_png(e['encoded']).numpy()
  assert image.shape == (8, 8, 1) and image.max() > 200
  assert 0 <= e['label'] < 10


class NsTinyImages(tfds.core.GeneratorBasedBuilder):
  """A 3-class tensorflow-datasets dataset built locally (tfds downloads are offline here)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(10), 'test': self._generate_examples(4)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'image': np.full((8 + i, 10, 3), 20 * i, np.uint8), 'label': i % 3}


def test_tfds_source_through_a_locally_built_dataset(tmp_path):
  NsTinyImages(data_dir=str(tmp_path)).download_and_prepare()
  s = sources.open_source('tfds:ns_tiny_images:train', data_dir=str(tmp_path))
  assert s.num_classes == 3 and s.class_names == ('a', 'b', 'c') and s.num_examples == 10
  els = _elements(s)
  assert len(els) == 10
  for e in els:
    image = tf.io.decode_image(e['encoded']).numpy()
    i = int(image[0, 0, 0]) // 20
    assert image.shape == (8 + i, 10, 3) and e['label'] == i % 3
  shards = [sources.open_source('tfds:ns_tiny_images:train', data_dir=str(tmp_path),
                                num_shards=3, shard_index=k) for k in range(3)]
  ids = [e['source_id'] for sh in shards for e in _elements(sh)]
  assert sorted(ids) == sorted(e['source_id'] for e in els)
  assert [sh.num_examples for sh in shards] == [len(_elements(sh)) for sh in shards]
  with pytest.raises(ValueError, match='split'):
    sources.open_source('tfds:ns_tiny_images:validation', data_dir=str(tmp_path))


def test_pseudo_source_yields_targets(tmp_path):
  encoded = [tf.io.encode_png(np.full((5, 6, 3), i, np.uint8)).numpy() for i in range(6)]
  probs = np.random.RandomState(0).dirichlet(np.ones(4), size=6).astype(np.float32)
  with records.PseudoLabelWriter(tmp_path, prefix='p', num_shards=1) as w:
    w.write_batch(encoded, [f'img{i}' for i in range(6)], probs)
  s = sources.open_source(f'pseudo:{tmp_path}/p-*.tfrecord')
  assert s.num_classes == 4
  els = _elements(s)
  assert [e['encoded'] for e in els] == encoded
  np.testing.assert_array_equal(np.stack([e['target'] for e in els]), probs)
  assert [e['label'] for e in els] == list(probs.argmax(1))


def test_split_per_class_is_deterministic_and_disjoint():
  s = sources.open_source('digits:test')
  lab, rest = sources.split_per_class(s, 5, seed=3)
  lab2, _ = sources.split_per_class(s, 5, seed=3)
  lab_els = _elements(lab)
  assert lab.num_examples == len(lab_els) == 50
  assert np.bincount([e['label'] for e in lab_els]).tolist() == [5] * 10
  assert [e['source_id'] for e in lab_els] == [e['source_id'] for e in _elements(lab2)]
  rest_ids = {e['source_id'] for e in _elements(rest)}
  assert rest.num_examples == len(rest_ids) == 310
  assert not rest_ids & {e['source_id'] for e in lab_els}
  other, _ = sources.split_per_class(s, 5, seed=4)
  assert [e['source_id'] for e in _elements(other)] != [e['source_id'] for e in lab_els]
  with pytest.raises(ValueError, match='fewer than'):
    sources.split_per_class(s, 1000, seed=0)


def test_bad_specs_raise_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='unknown source kind'):
    sources.open_source('ftp:foo')
  with pytest.raises(ValueError, match='shard_index'):
    sources.open_source('digits', num_shards=2, shard_index=2)
  with pytest.raises(FileNotFoundError, match='no files match'):
    sources.open_source(f'images:{tmp_path}/*.jpg')
  with pytest.raises(FileNotFoundError):
    sources.open_source(f'folder:{tmp_path}/missing')
  with pytest.raises(ValueError, match='digits split'):
    sources.open_source('digits:valid')
