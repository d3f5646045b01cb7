"""ns-train under tf.distribute: MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy
with 2 worker processes on loopback follow the single-device loss curve; the strategy factory."""

import json
import os
import re
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8
# No dropout / stochastic depth, batch statistics over the global batch: the only difference left
# between one device and N replicas is the random crop and flip of each image.
COMMON = ['--model=b0', '--width=0.25', '--depth=0.25', '--resolution=32', '--small_image',
          '--labeled=digits:train', f'--train_steps={STEPS}', '--batch_size=32', '--log_every=1',
          '--checkpoint_every=100', '--dropout=0', '--drop_path_rate=0', '--sync_batchnorm',
          '--warmup_epochs=0', '--optimizer=momentum', '--base_learning_rate=0.4',
          '--progress=log', '--seed=3']
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}

# One fixed global batch through ns-train's step on one device and on 2 mirrored logical CPUs:
# losses, weights and EMA must agree to float precision (gradient sum over replicas, weight decay
# split, cross-replica batch norm, EMA).
EXACT = '''
import json, numpy as np, tensorflow as tf
from noisy_student_tf.train import strategy as sl, trainer, optim
sl.split_cpu(2)
cfg = trainer.TrainConfig(model_dir='unused', labeled='unused', model='b0', width=0.25, depth=0.25,
    resolution=32, small_image=True, batch_size=32, train_steps=3, dropout=0.0, drop_path_rate=0.0,
    sync_batchnorm=True, optimizer='momentum', seed=3, ema_decay=0.9)
data = trainer._Data(None, None, None, 10, None)
schedule = optim.LearningRate(base=0.1, total_steps=3)
rng = np.random.default_rng(0)
batch = (rng.normal(size=(32, 32, 32, 3)).astype('float32'),
         np.eye(10, dtype='float32')[rng.integers(0, 10, 32)], np.full(32, 1 / 32, 'float32'))
out = {}
for name in ('default', 'mirrored'):
  strategy = sl.make_strategy(name)
  run = trainer._Run(cfg, data, strategy, 3, schedule)
  ds = tf.data.Dataset.from_tensors(batch).repeat()
  if name == 'mirrored':
    ds = ds.flat_map(lambda *t: tf.data.Dataset.from_tensor_slices(
        tuple(tf.reshape(a, tf.concat([[2, 16], tf.shape(a)[1:]], 0)) for a in t)))
  iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: ds))
  chunk = run.train_chunk_fn()
  losses = [float(chunk(iterator, tf.constant(1))['loss']) for _ in range(3)]
  ema = run.weights_by_path('ema')
  out[name] = {'replicas': strategy.num_replicas_in_sync, 'losses': losses,
               'kernel': float(np.abs(run.model.get_layer('stem_conv').kernel.numpy()).sum()),
               'ema_moving_var': float(ema['top_bn/moving_variance'].sum())}
print('RESULT' + json.dumps(out))
'''


def _losses(model_dir):
  records = {}
  with open(os.path.join(model_dir, 'train_log.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      if r['kind'] == 'train':
        records[r['step']] = r['loss']
  return np.array([records[s] for s in range(1, STEPS + 1)])


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _assert_same_curve(single, other):
  # Same initial weights and the same examples in every step; only the random crops and flips of
  # the data pipeline differ (they move a step's loss by a few percent: 6.3% at step 1 was seen on
  # a batch of 32). The exact replica arithmetic is checked by EXACT on one fixed batch.
  assert other[0] == pytest.approx(single[0], rel=0.1)
  assert np.abs(other - single).mean() < 0.1 * single.mean()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs, concurrently: one device, mirrored over 2 logical CPUs, and 2 multi-worker processes.
  Returns {name: model_dir}."""
  root = tmp_path_factory.mktemp('dist')
  dirs = {n: str(root / n) for n in ('single', 'mirrored', 'multi_worker')}
  cli = [sys.executable, '-m', 'noisy_student_tf.cli.train']
  procs = [subprocess.Popen(cli + COMMON + [f'--model_dir={dirs["single"]}'], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
           subprocess.Popen(cli + COMMON + [f'--model_dir={dirs["mirrored"]}', '--strategy=mirrored',
                                           '--num_cpu_devices=2'],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)]
  procs.append(subprocess.Popen([sys.executable, '-c', EXACT], cwd=REPO, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  workers = [f'127.0.0.1:{_free_port()}', f'127.0.0.1:{_free_port()}']
  for index in range(2):
    tf_config = {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': index}}
    procs.append(subprocess.Popen(
        cli + COMMON + [f'--model_dir={dirs["multi_worker"]}', '--strategy=multi_worker'],
        cwd=REPO, env={**ENV, 'TF_CONFIG': json.dumps(tf_config)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=400)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  dirs['exact'] = json.loads(outputs[2].split('RESULT')[-1])
  # 'worker I decoded N training images for S steps of R rows': single device, then the workers.
  dirs['decoded'] = [int(re.findall(r'decoded (\d+) training images', out)[-1])
                     for i, out in enumerate(outputs) if i in (0, 3, 4)]
  return dirs


def test_mirrored_step_equals_single_device_step_exactly(runs):
  single, mirrored = runs['exact']['default'], runs['exact']['mirrored']
  assert (single['replicas'], mirrored['replicas']) == (1, 2)
  np.testing.assert_allclose(mirrored['losses'], single['losses'], rtol=1e-4)
  assert single['losses'][2] < single['losses'][0]
  assert mirrored['kernel'] == pytest.approx(single['kernel'], rel=1e-4)
  assert mirrored['ema_moving_var'] == pytest.approx(single['ema_moving_var'], rel=1e-4)


def test_mirrored_two_cpus_follows_single_device_curve(runs):
  config = json.loads(pathlib.Path(runs['mirrored'], 'config.json').read_text())
  assert config['training']['effective']['num_replicas'] == 2
  assert config['training']['effective']['per_replica_batch'] == 16
  _assert_same_curve(_losses(runs['single']), _losses(runs['mirrored']))


def test_multi_worker_two_processes_follows_single_device_curve(runs):
  from noisy_student_tf import model_dir as model_dir_lib
  config = json.loads(pathlib.Path(runs['multi_worker'], 'config.json').read_text())
  assert config['training']['effective']['num_replicas'] == 2
  _assert_same_curve(_losses(runs['single']), _losses(runs['multi_worker']))
  assert model_dir_lib.is_complete(runs['multi_worker'])
  assert not [p for p in os.listdir(os.path.join(runs['multi_worker'], 'ckpt'))
              if p.startswith('.worker')]


def test_multi_worker_each_worker_decodes_half_the_images(runs):
  # The run's images: STEPS global batches of 32 rows. Each worker decodes its 16 rows of each
  # and nothing beyond the last step; one device decodes every row (plus tf.data's read-ahead).
  single, *workers = runs['decoded']
  assert single >= STEPS * 32
  assert workers == [STEPS * 16, STEPS * 16], runs['decoded']


def test_strategy_factory(monkeypatch):
  import tensorflow as tf
  from noisy_student_tf.train import strategy as strategy_lib
  assert strategy_lib.make_strategy('default').num_replicas_in_sync == 1
  with pytest.raises(ValueError, match='one of'):
    strategy_lib.make_strategy('parameter_server')
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(ValueError, match='TF_CONFIG'):
    strategy_lib.make_strategy('multi_worker')
  monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["localhost:1"]}}')
  with pytest.raises(ValueError, match='name this task'):
    strategy_lib.make_strategy('multi_worker')

  # The TPU path: resolver for the named TPU, connect, initialise, TPUStrategy on that resolver.
  calls = []

  class Resolver:
    def __init__(self, tpu):
      calls.append(('resolver', tpu))

  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver', Resolver)
  monkeypatch.setattr(tf.config, 'experimental_connect_to_cluster',
                      lambda r: calls.append(('connect', type(r).__name__)))
  monkeypatch.setattr(tf.tpu.experimental, 'initialize_tpu_system',
                      lambda r: calls.append(('init', type(r).__name__)))
  monkeypatch.setattr(tf.distribute, 'TPUStrategy',
                      lambda r: calls.append(('strategy', type(r).__name__)) or 'tpu-strategy')
  assert strategy_lib.make_strategy('tpu', tpu='grpc://10.0.0.2:8470') == 'tpu-strategy'
  assert calls == [('resolver', 'grpc://10.0.0.2:8470'), ('connect', 'Resolver'),
                   ('init', 'Resolver'), ('strategy', 'Resolver')]


def test_per_replica_batch_must_divide():
  from noisy_student_tf.train import strategy as strategy_lib

  class TwoReplicas:
    num_replicas_in_sync = 2
  assert strategy_lib.per_replica_batch(64, TwoReplicas()) == 32
  with pytest.raises(ValueError, match='not divisible by the 2 replicas'):
    strategy_lib.per_replica_batch(33, TwoReplicas())


def test_input_pipeline_shards_partition_every_global_batch(tmp_path):
  """Each of 2 input pipelines decodes only its half of every global batch; together they hold
  the rows one device's batch holds, in its order, with its per-row weights."""
  import tensorflow as tf
  from noisy_student_tf.data import order, pipeline, records, sources
  from noisy_student_tf.model_dir import InputConvention
  rng = np.random.RandomState(0)
  probs = rng.dirichlet(np.ones(10), size=24).astype(np.float32)  # distinct soft targets
  with records.PseudoLabelWriter(tmp_path, prefix='pl') as w:
    w.write_batch([tf.io.encode_png(im).numpy()
                   for im in rng.randint(0, 256, (24, 8, 8, 3)).astype(np.uint8)],
                  [f'u{i}' for i in range(24)], probs)
  for i, im in enumerate(rng.randint(0, 256, (30, 8, 8, 3)).astype(np.uint8)):  # files on disk
    (tmp_path / 'folder' / f'c{i % 10}').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'folder' / f'c{i % 10}' / f'{i}.png').write_bytes(tf.io.encode_png(im).numpy())
  labeled = sources.open_source(f'folder:{tmp_path}/folder')
  pseudo = sources.open_source(f'pseudo:{tmp_path}/pl-*.tfrecord')
  b, u, seed, steps = 4, 6, 7, 3
  kwargs = dict(batch_size=b, resolution=16, num_classes=10, convention=InputConvention(),
                pseudo=pseudo, unlabeled_ratio=u / b, seed=seed, label_smoothing=0.1)
  counters = [pipeline.DecodeCounter() for _ in range(2)]
  shards = [[[t.numpy() for t in batch] for batch in pipeline.make_train_dataset(
      labeled, num_shards=2, shard_index=i, decode_counter=counters[i], num_batches=steps,
      **kwargs)] for i in range(2)]
  # The reference, one device's batches: consecutive elements of the seeded streams, labeled then
  # pseudo, shuffled by (seed, batch index).
  labels = [int(d['label']) for d in order.shuffled_stream(labeled, seed).take(steps * b)]
  targets = [d['target'].numpy() for d in order.shuffled_stream(pseudo, seed + 1).take(steps * u)]
  for k in range(steps):
    images, got_targets, weights = (np.concatenate([shard[k][j] for shard in shards])
                                    for j in range(3))
    assert images.shape == (b + u, 16, 16, 3) and shards[0][k][0].shape[0] == (b + u) // 2
    rows = np.concatenate([np.eye(10)[labels[k * b:(k + 1) * b]] * 0.9 + 0.01,
                           targets[k * u:(k + 1) * u]])
    perm = tf.random.experimental.stateless_shuffle(tf.range(b + u), seed=[seed, k]).numpy()
    np.testing.assert_array_equal(weights, np.float32([1 / b] * b + [1 / u] * u)[perm])
    np.testing.assert_allclose(got_targets, rows[perm], rtol=1e-6)
  assert [len(shard) for shard in shards] == [steps, steps]
  assert [counter.count for counter in counters] == [steps * (b + u) // 2] * 2
  with pytest.raises(ValueError, match='skip_corrupt'):
    pipeline.make_train_dataset(labeled, num_shards=2, shard_index=0, skip_corrupt=True, **kwargs)
