"""Pseudo-label records: byte-identical images and equal probabilities after a round trip."""

import os

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import records


def _read(path, num_classes):
  return [{k: v.numpy() for k, v in records.parse_pseudo_example(r, num_classes).items()}
          for r in tf.data.TFRecordDataset(path)]


def test_full_and_top_k_round_trip(cifar10_small, tmp_path):
  files = sorted((cifar10_small / 'test').glob('*/*.jpg'))[::100]  # 10 real JPEGs
  encoded = [f.read_bytes() for f in files]
  probs = np.random.RandomState(0).dirichlet(np.ones(10), size=len(files)).astype(np.float32)
  with records.PseudoLabelWriter(tmp_path, prefix='full', shard_index=1, num_shards=2,
                                 teacher='b0@gen0', generation=1) as w:
    w.write_batch(tf.constant(encoded), [f.name for f in files], probs)
  assert os.path.basename(w.path) == 'full-00001-of-00002.tfrecord' and w.count == 10
  assert os.listdir(tmp_path) == ['full-00001-of-00002.tfrecord']
  assert records.peek_num_classes(w.path) == 10
  got = _read(w.path, 10)
  assert [g['encoded'] for g in got] == encoded
  np.testing.assert_array_equal(np.stack([g['target'] for g in got]), probs)
  assert [g['label'] for g in got] == list(probs.argmax(1))
  np.testing.assert_allclose([g['confidence'] for g in got], probs.max(1))
  assert got[0]['teacher'] == b'b0@gen0' and got[0]['generation'] == 1
  assert got[3]['source_id'] == files[3].name.encode()

  with records.PseudoLabelWriter(tmp_path, prefix='top3', top_k=3) as w:
    w.write_batch(encoded, [f.name for f in files], probs)
  got = _read(w.path, 10)
  assert [g['encoded'] for g in got] == encoded
  for g, p in zip(got, probs):
    top = np.argsort(-p)[:3]
    np.testing.assert_allclose(g['target'][top], p[top] / p[top].sum(), rtol=1e-6)
    assert np.count_nonzero(g['target']) == 3 and g['label'] == p.argmax()
  raw = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(w.path))).numpy())
  assert len(raw.features.feature['pseudo/probabilities'].float_list.value) == 3


def test_writer_leaves_nothing_under_the_final_name_on_failure(tmp_path):
  with pytest.raises(RuntimeError):
    with records.PseudoLabelWriter(tmp_path, prefix='x') as w:
      w.write(b'abc', 'id', [0.2, 0.8])
      raise RuntimeError('labeling crashed')
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match='top_k'):
    records.PseudoLabelWriter(tmp_path, top_k=0)
