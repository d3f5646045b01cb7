"""tf.distribute strategies by name, and the batch arithmetic that goes with them.

'default'      one device (the first GPU if any, else the CPU);
'mirrored'     every local GPU, or every logical CPU device when there is no GPU (see split_cpu);
'multi_worker' MultiWorkerMirroredStrategy, cluster and task read from the TF_CONFIG variable;
'tpu'          TPUStrategy on the TPU named by `tpu` ('' or 'local' for a TPU VM).
"""

import json
import os

import tensorflow as tf

STRATEGIES = ('default', 'mirrored', 'multi_worker', 'tpu')


def split_cpu(num_devices):
  """Splits the physical CPU into `num_devices` logical devices (for MirroredStrategy tests on a
  machine without GPUs).  Must run before TensorFlow initialises its devices; a no-op for 1."""
  if num_devices <= 1:
    return
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def _tpu_strategy(tpu):
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or 'local')
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def make_strategy(name, tpu=None):
  """Returns the tf.distribute.Strategy called `name` (one of STRATEGIES).

  tpu: the TPU name or address for 'tpu'.  Raises ValueError for an unknown name, and for
  'multi_worker' without a TF_CONFIG that names this task.
  """
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == 'multi_worker':
    tf_config = os.environ.get('TF_CONFIG')
    if not tf_config:
      raise ValueError('strategy multi_worker needs the TF_CONFIG environment variable '
                       '(cluster and task), which is not set')
    try:
      task = json.loads(tf_config).get('task', {})
    except json.JSONDecodeError as e:
      raise ValueError(f'TF_CONFIG is not valid JSON: {e}') from None
    if 'type' not in task or 'index' not in task:
      raise ValueError(f'TF_CONFIG must name this task ({{"task": {{"type": "worker", "index": N}}}}), '
                       f'got {tf_config!r}')
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    return _tpu_strategy(tpu)
  raise ValueError(f'strategy must be one of {STRATEGIES}, got {name!r}')


def per_replica_batch(global_batch, strategy):
  """Returns global_batch // replicas; raises ValueError when it does not divide evenly."""
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError(f'global batch {global_batch} is not divisible by the {replicas} replicas of '
                     f'the {type(strategy).__name__}; use a multiple of {replicas}')
  return global_batch // replicas


def is_chief(strategy):
  """True on the task that writes files: always, except on non-chief multi-worker tasks."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  cluster = resolver.cluster_spec().as_dict()
  if 'chief' in cluster:
    return task_type == 'chief'
  return task_type == 'worker' and task_id == 0


def worker_index(strategy):
  """This task's index among the workers (0 on single-machine strategies)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 0
  return int(resolver.task_id or 0)
