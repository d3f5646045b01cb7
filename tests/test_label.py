"""ns-label: records of every unlabeled image exactly once, soft/hard/temperature/top-k, workers by
shard, SIGKILL then rerun, corrupt images, bad input."""

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.data import sources
from noisy_student_tf.selftrain import label as label_lib

TINY16 = dict(width=0.25, depth=0.25, resolution=16, small_image=True)


def make_teacher(path, num_classes=10, seed=0, **overrides):
  """Writes a model dir holding an untrained tiny EfficientNet (random but fixed weights)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  config = models.make_config('b0', num_classes, **{**TINY16, **overrides})
  model = models.build_from_config(config)
  model_dir_lib.write_config(str(path), model_dir_lib.ModelDirConfig(
      model=config, class_names=[str(i) for i in range(num_classes)]))
  model_dir_lib.save_weights(str(path), model, 'ema')
  model_dir_lib.save_weights(str(path), model, 'raw')
  return str(path)


def read_records(folder):
  """Returns a list of dicts (source_id, label, confidence, probabilities, indices) of the shards."""
  out = []
  for path in sorted(tf.io.gfile.glob(os.path.join(str(folder), '*.tfrecord'))):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      f = tf.train.Example.FromString(raw).features.feature
      out.append({'source_id': f['image/source_id'].bytes_list.value[0].decode(),
                  'label': f['pseudo/label'].int64_list.value[0],
                  'confidence': f['pseudo/confidence'].float_list.value[0],
                  'probabilities': np.asarray(f['pseudo/probabilities'].float_list.value),
                  'indices': list(f['pseudo/indices'].int64_list.value),
                  'encoded': f['image/encoded'].bytes_list.value[0]})
  return out


def source_ids(spec):
  """The source ids of every image of `spec`, in order."""
  ds = sources.open_source(spec).dataset
  return [d['source_id'].decode() for d in ds.as_numpy_iterator()]


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  return make_teacher(tmp_path_factory.mktemp('teacher'))


@pytest.fixture(scope='module')
def digit_folder(tmp_path_factory):
  """digits:test as a folder of PNGs plus 3 corrupt files (a real unlabeled folder)."""
  root = tmp_path_factory.mktemp('unlabeled')
  for d in sources.open_source('digits:test').dataset.as_numpy_iterator():
    sub = root / str(d['label'])
    sub.mkdir(exist_ok=True)
    (sub / (d['source_id'].decode().replace(':', '_') + '.png')).write_bytes(d['encoded'])
  for i in range(3):
    (root / '0' / f'corrupt{i}.jpg').write_bytes(b'\xff\xd8 not a jpeg ' * (i + 1))
  return root


def test_soft_labels_every_image_once_with_stats(teacher, digit_folder, tmp_path):
  config = label_lib.LabelConfig(model_dir=teacher, unlabeled=f'folder:{digit_folder}',
                                 output_dir=str(tmp_path / 'out'), num_shards=3, temperature=2.0,
                                 batch_size=64)
  stats = label_lib.label(config)
  recs = read_records(tmp_path / 'out')
  expected = [s for s in source_ids(f'folder:{digit_folder}') if 'corrupt' not in s]
  assert sorted(r['source_id'] for r in recs) == sorted(expected)
  assert stats['count'] == len(expected) == 360 and stats['corrupt_skipped'] == 3
  assert sum(stats['class_counts']) == 360
  assert sum(stats['confidence_histogram']['counts']) == 360
  assert stats['complete'] and label_lib.is_complete(str(tmp_path / 'out'))
  assert (tmp_path / 'out' / 'plot.png').exists()
  assert stats['accuracy_against_source_labels'] is not None
  # Soft labels at T=2; the confidence is the teacher's own (T=1) max probability.
  model, _ = model_dir_lib.load_model(teacher)
  by_id = {r['source_id']: r for r in recs}
  first = next(d for d in sources.open_source(f'folder:{digit_folder}').dataset.as_numpy_iterator()
               if b'corrupt' not in d['source_id'])
  from noisy_student_tf.data import preprocessing  # pylint: disable=g-import-not-at-top
  image = preprocessing.eval_preprocess(first['encoded'], 16, model_dir_lib.InputConvention(),
                                        small_image=True)
  logits = model(image[None], training=False).numpy()[0].astype(np.float64)
  rec = by_id[first['source_id'].decode()]
  p1 = np.exp(logits - logits.max()); p1 /= p1.sum()
  p2 = np.exp((logits - logits.max()) / 2); p2 /= p2.sum()
  np.testing.assert_allclose(rec['probabilities'], p2, atol=1e-4)
  assert rec['confidence'] == pytest.approx(p1.max(), abs=1e-4)
  assert rec['label'] == int(np.argmax(logits))
  assert rec['encoded'] == first['encoded']  # the original bytes, not re-encoded


def test_hard_and_top_k(teacher, tmp_path):
  stats = label_lib.label(label_lib.LabelConfig(
      model_dir=teacher, unlabeled='digits:test', output_dir=str(tmp_path / 'hard'),
      label_type='hard'))
  recs = read_records(tmp_path / 'hard')
  assert len(recs) == stats['count'] == 360
  for r in recs[:20]:
    assert r['probabilities'].tolist() == np.eye(10)[r['label']].tolist()
    assert 0.1 <= r['confidence'] < 1.0
  label_lib.label(label_lib.LabelConfig(model_dir=teacher, unlabeled='digits:test',
                                        output_dir=str(tmp_path / 'top3'), top_k=3))
  top3 = read_records(tmp_path / 'top3')
  assert all(len(r['indices']) == 3 and r['indices'][0] == r['label'] for r in top3)
  # The pseudo: reader rebuilds dense, renormalised targets.
  pseudo = sources.open_source(f'pseudo:{tmp_path / "top3"}/*.tfrecord')
  targets = np.stack([d['target'] for d in pseudo.dataset.take(5).as_numpy_iterator()])
  np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-5)
  assert ((targets > 0).sum(1) == 3).all()


@pytest.mark.parametrize('num_classes,top_k,label_type,temperature,generation', [
    (10, None, 'soft', 1.0, 0), (1000, None, 'soft', 2.0, 3), (1000, 5, 'soft', 1.0, -2),
    (10, 3, 'hard', 1.0, 1), (10, 10, 'soft', 0.5, 200), (300, 1, 'soft', 1.0, 0)])
def test_records_are_make_example_serialized_in_key_order(num_classes, top_k, label_type,
                                                          temperature, generation):
  from noisy_student_tf.data import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(num_classes)
  config = label_lib.LabelConfig(model_dir='m', unlabeled='u', output_dir='o', top_k=top_k,
                                 label_type=label_type, temperature=temperature,
                                 generation=generation)
  logits = rng.normal(size=(9, num_classes)).astype(np.float32) * 3
  logits[3] = 0  # every class tied
  encoded = [rng.bytes(int(n)) for n in rng.integers(0, 300, 9)]
  encoded[0] = rng.bytes(70000)  # multi-byte lengths
  ids = [f'cls/{i}\u00e9.jpg'.encode() for i in range(9)]
  ids[1] = b''
  got, label, confidence = label_lib.pseudo_records(
      logits, np.array(encoded, object), np.array(ids, object), config, 'b0:/teacher:ema')
  probs, want_confidence, want_label = label_lib.pseudo_targets(logits, config)
  np.testing.assert_array_equal(label, want_label)
  np.testing.assert_array_equal(confidence, want_confidence)
  for i, record in enumerate(got):
    ex = records.make_example(encoded[i], ids[i], probs[i], top_k=top_k,
                              teacher='b0:/teacher:ema', generation=generation)
    ex.features.feature['pseudo/confidence'].float_list.value[0] = float(want_confidence[i])
    assert record == ex.SerializeToString(deterministic=True)


@pytest.mark.parametrize('small_image,max_image_pixels', [(False, 1000), (True, 0)])
def test_labeling_batches_are_make_eval_datasets_batches(small_image, max_image_pixels):
  from noisy_student_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def image(h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

  encoded = []  # JPEGs and PNGs of several sizes; corrupt and (with the limit) too large ones
  for i in range(26):
    h, w = [(12, 12), (20, 31), (33, 17), (16, 16)][i % 4]
    encoded.append(tf.io.encode_jpeg(image(h, w)).numpy() if i % 3 else
                   tf.io.encode_png(image(h, w)).numpy())
  for i in (5, 9, 10, 11, 12, 25):  # one batch (8-11, of 4) wholly bad; the last image bad
    encoded[i] = b'\xff\xd8\xff not a jpeg' if i % 2 else b'\x89PNG\r\n\x1a\n broken'
  encoded[17] = tf.io.encode_jpeg(image(40, 30)).numpy()  # 1200 pixels
  encoded[20] = tf.io.encode_png(image(30, 40)).numpy()
  ids = [f'img{i}'.encode() for i in range(len(encoded))]
  source = sources.Source(tf.data.Dataset.from_tensor_slices(
      {'encoded': encoded, 'source_id': ids, 'label': np.arange(len(ids), dtype=np.int64)}),
      None, None, len(ids), 'test:')
  convention = model_dir_lib.InputConvention()
  config = label_lib.LabelConfig(model_dir='m', unlabeled='u', output_dir='o', batch_size=4,
                                 max_image_pixels=max_image_pixels)
  model_config = types.SimpleNamespace(  # what the input pipeline reads of a ModelDirConfig
      input=convention, model=types.SimpleNamespace(small_image=small_image))
  got_counter, want_counter = pipeline.CorruptCounter(), pipeline.CorruptCounter()
  got = list(label_lib.labeling_dataset(source, config, model_config, 16, got_counter))
  want = list(pipeline.make_eval_dataset(
      source, batch_size=4, resolution=16, convention=convention, small_image=small_image,
      keep_encoded=True, skip_corrupt=True, corrupt_counter=want_counter,
      max_image_pixels=max_image_pixels))
  assert [len(b['label']) for b in got] == [len(b['label']) for b in want]
  for g, w in zip(got, want):
    assert sorted(g) == sorted(w)
    for key in w:
      np.testing.assert_array_equal(g[key].numpy(), w[key].numpy())
  assert (got_counter.count, got_counter.too_large) == (want_counter.count, want_counter.too_large)
  assert (want_counter.count, want_counter.too_large) == ((8, 2) if max_image_pixels else (6, 0))
  assert sorted(got_counter.source_ids) == sorted(want_counter.source_ids)


def test_workers_by_shard_and_rerun_skips_done_shards(teacher, tmp_path):
  out = tmp_path / 'out'
  base = dict(model_dir=teacher, unlabeled='digits:test', output_dir=str(out), num_shards=3)
  partial = label_lib.label(label_lib.LabelConfig(**base, shard_index=1))
  assert partial == {'complete': False, 'shards_done': 1, 'num_shards': 3}
  assert [p.name for p in sorted(out.glob('*.tfrecord'))] == ['pseudo-00001-of-00003.tfrecord']
  assert not (out / 'stats.json').exists()
  mtime = (out / 'pseudo-00001-of-00003.tfrecord').stat().st_mtime_ns
  stats = label_lib.label(label_lib.LabelConfig(**base))
  assert (out / 'pseudo-00001-of-00003.tfrecord').stat().st_mtime_ns == mtime
  ids = [r['source_id'] for r in read_records(out)]
  assert sorted(ids) == sorted(source_ids('digits:test')) and stats['count'] == 360
  # Another sharding or teacher into the same folder is refused.
  with pytest.raises(ValueError, match='other settings'):
    label_lib.label(label_lib.LabelConfig(**{**base, 'num_shards': 4}))


def test_sigkill_then_rerun_labels_every_image_exactly_once(teacher, digit_folder, tmp_path):
  out = tmp_path / 'out'
  cmd = [sys.executable, '-m', 'noisy_student_tf.cli.label', f'--model_dir={teacher}',
         f'--unlabeled=folder:{digit_folder}', f'--output_dir={out}', '--num_shards=8',
         '--batch_size=8']
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 90
  while not list(out.glob('*.tfrecord*')) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  time.sleep(random.uniform(0.0, 1.0))
  killed_mid_run = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert killed_mid_run, 'ns-label finished before it could be killed'
  assert not (out / 'stats.json').exists()
  done_before = len(list(out.glob('*.tfrecord')))
  assert done_before < 8
  rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  ids = collections.Counter(r['source_id'] for r in read_records(out))
  expected = [s for s in source_ids(f'folder:{digit_folder}') if 'corrupt' not in s]
  assert sorted(ids) == sorted(expected) and set(ids.values()) == {1}
  assert not [p for p in out.iterdir() if p.name.endswith('.tmp')]
  stats = json.loads((out / 'stats.json').read_text())
  assert stats['count'] == 360 and stats['corrupt_skipped'] == 3


@pytest.mark.parametrize('override,message', [
    ({'label_type': 'fuzzy'}, "label_type must be one of ('soft', 'hard'), got 'fuzzy'"),
    ({'temperature': 0.0}, 'temperature must be > 0, got 0.0'),
    ({'top_k': 0}, 'top_k must be an integer >= 1'),
    ({'num_shards': 2, 'shard_index': 2}, 'shard_index must be in [0, num_shards=2), got 2'),
    ({'model_dir': '/nonexistent/teacher'}, 'teacher model_dir'),
    ({'unlabeled': 'images:/nonexistent/*.jpg'}, "unlabeled source 'images:/nonexistent/*.jpg'"),
])
def test_bad_input_fails_before_work(teacher, tmp_path, override, message):
  config = label_lib.LabelConfig(**{'model_dir': teacher, 'unlabeled': 'digits:test',
                                    'output_dir': str(tmp_path / 'out'), **override})
  with pytest.raises(ValueError) as e:
    label_lib.label(config)
  assert message in str(e.value)
  assert not list(tmp_path.glob('out/*.tfrecord'))


def test_empty_unlabeled_folder_is_refused(teacher, tmp_path):
  (tmp_path / 'empty' / 'cls').mkdir(parents=True)
  with pytest.raises(ValueError, match='unlabeled source'):
    label_lib.label(label_lib.LabelConfig(model_dir=teacher, unlabeled=f'folder:{tmp_path / "empty"}',
                                          output_dir=str(tmp_path / 'out')))
