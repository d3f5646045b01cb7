"""ns-train: trains a teacher or a student EfficientNet (see noisy_student_tf.train.trainer).

  ns-train --flagfile=flags/cifar10_supervised.cfg --model_dir=/tmp/cifar_b0
  ns-train --model=b0 --labeled=folder:/data/train --pseudo='pseudo:/work/balanced/*.tfrecord' \
      --unlabeled_ratio=3 --init_checkpoint=/work/gen0 --model_dir=/work/gen1

Every flag is a field of TrainConfig; rerunning the same command resumes from MODEL_DIR/ckpt.
"""

import dataclasses
import json
import logging as std_logging
import sys

from absl import app, flags, logging

from noisy_student_tf.train import callbacks, fixres, optim
from noisy_student_tf.train import strategy as strategy_lib
from noisy_student_tf.train import trainer

HELP = {
    'model_dir': 'Where checkpoints (ckpt/), TensorBoard logs and the trained model go.',
    'labeled': 'Labeled training source: folder:PATH, tfds:NAME[:SPLIT], tfrecord:GLOB, digits.',
    'model': 'Model name: efficientnet-b0 ... efficientnet-b8, efficientnet-l2 (or short b0).',
    'width': 'Width multiplier override (default: the named model\'s).',
    'depth': 'Depth multiplier override (default: the named model\'s).',
    'resolution': 'Training resolution in pixels (default: the named model\'s).',
    'dropout': 'Dropout rate before the classifier (default: the named model\'s).',
    'drop_path_rate': 'Stochastic-depth drop rate of the last block (default 0.2 = survival 0.8).',
    'small_image': 'Stride 1 in stages 2 and 3, for 32x32 images (CIFAR, SVHN).',
    'bn_momentum': 'Batch-norm moving-average momentum (default 0.99; lower suits short runs).',
    'pseudo': 'Pseudo-labeled records for a student: pseudo:GLOB (written by ns-label/ns-filter).',
    'unlabeled_ratio': 'Pseudo-labeled rows per labeled row in each batch (paper: 1 for B0, 3 for B7+).',
    'eval_data': 'Labeled source evaluated with the EMA weights (every --eval_every steps, and at the end).',
    'data_dir': 'tensorflow-datasets data dir for tfds: sources.',
    'label_offset': 'Subtracted from tfrecord: labels (1 for 1-based ImageNet records).',
    'num_classes': 'Class count of --labeled when the source does not say it (tfrecord:); '
                   'default: from the label scan.',
    'scan_records': 'Read the labels of tfrecord: sources once (cached) to count examples and '
                    'classes and check labels against --label_offset / --num_classes.',
    'source_cache_dir': 'Where label scans are cached (default: MODEL_DIR/source_stats).',
    'flip': 'Random horizontal flips of training images (turn off for digits and text).',
    'skip_corrupt': 'Skip undecodable labeled images instead of failing.',
    'max_image_pixels': 'Refuse images with more pixels (height x width, read from the header '
                        'before decoding) like corrupt ones: skipped with --skip_corrupt, else '
                        'the run stops naming them. 0: no limit.',
    'batch_size': 'Global labeled batch size (summed over all replicas).',
    'eval_batch_size': 'Batch size of evaluation.',
    'train_steps': 'Training length in steps (give this or --epochs).',
    'epochs': 'Training length in passes over the labeled data (give this or --train_steps).',
    'steps_per_epoch': 'Steps per epoch, for sources whose size is unknown (tfrecord:).',
    'optimizer': f'One of {optim.OPTIMIZERS}.',
    'base_learning_rate': 'Learning rate per 256 labeled examples (scaled by batch_size/256).',
    'lr_schedule': f'One of {optim.SCHEDULES}: exponential = x lr_decay_factor every lr_decay_epochs.',
    'lr_decay_epochs': 'Epochs between exponential decays (paper: 2.4; 4.8 for 700-epoch runs).',
    'lr_decay_factor': 'Exponential decay factor (paper: 0.97).',
    'warmup_epochs': 'Linear learning-rate warmup, in epochs.',
    'rmsprop_decay': 'RMSProp decay of the squared-gradient average (rho).',
    'momentum': 'Momentum of RMSProp / SGD.',
    'epsilon': 'Optimizer epsilon (RMSProp: inside the square root).',
    'weight_decay': 'L2 weight decay on convolution and dense kernels.',
    'label_smoothing': 'Label smoothing of the labeled targets.',
    'ema_decay': 'Decay of the exponential moving average of the weights (used for eval and export).',
    'randaug_layers': 'RandAugment: number of ops per image (0 = off).',
    'randaug_magnitude': 'RandAugment magnitude on the official scale (paper: 27 for L2).',
    'precision': f'One of {trainer.PRECISIONS}.',
    'jit_compile': 'Compile the forward and backward pass with XLA.',
    'strategy': f'One of {strategy_lib.STRATEGIES} (multi_worker reads TF_CONFIG).',
    'tpu': 'TPU name or address for --strategy=tpu (empty: local TPU VM).',
    'sync_batchnorm': 'Batch-norm statistics over the global batch instead of per replica.',
    'steps_per_execution': 'Training steps per tf.function call (less Python overhead).',
    'trainable_from': 'Freeze every layer before this layer name (fine-tuning).',
    'init_checkpoint': 'A model dir whose EMA weights initialise the model (e.g. the teacher).',
    'seed': 'Random seed of initialisation and data order.',
    'checkpoint_every': 'Steps between checkpoints.',
    'keep_checkpoints': 'How many recent checkpoints to keep.',
    'log_every': 'Steps between log lines / TensorBoard summaries.',
    'eval_every': 'Steps between evaluations on --eval_data (0: only at the end).',
    'progress': f'One of {callbacks.PROGRESS_MODES}: auto = a bar on a terminal, log lines otherwise.',
}

_ENUMS = {'optimizer': optim.OPTIMIZERS, 'lr_schedule': optim.SCHEDULES,
          'precision': trainer.PRECISIONS, 'strategy': strategy_lib.STRATEGIES,
          'progress': callbacks.PROGRESS_MODES}
_FLOATS = ('bn_momentum', 'width', 'depth', 'dropout', 'drop_path_rate', 'epochs', 'unlabeled_ratio')
_INTS = ('resolution', 'train_steps', 'steps_per_epoch', 'num_classes')


def define_flags():
  """Defines one absl flag per TrainConfig field (plus --num_cpu_devices)."""
  for field in dataclasses.fields(trainer.TrainConfig):
    name, default = field.name, field.default
    help_text = HELP[name]
    if name in _ENUMS:
      flags.DEFINE_enum(name, default, list(_ENUMS[name]), help_text)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_text)
    elif name in _INTS or isinstance(default, int):
      flags.DEFINE_integer(name, default, help_text)
    elif name in _FLOATS or isinstance(default, float):
      flags.DEFINE_float(name, default, help_text)
    else:
      flags.DEFINE_string(name, default, help_text)
  flags.DEFINE_integer('num_cpu_devices', 1, 'Split the CPU into this many logical devices '
                       '(for --strategy=mirrored without GPUs).')


define_flags()
# FixRes (noisy_student_tf.train.fixres): with --finetune_resolution, ns-train fine-tunes the model
# dir --init_checkpoint into --model_dir instead of training (uses --labeled, --batch_size,
# --trainable_from, --data_dir, --label_offset, --seed, --log_every).
flags.DEFINE_integer('finetune_resolution', 0, 'FixRes: fine-tune --init_checkpoint at this test '
                     'resolution on unaugmented --labeled images, writing --model_dir (0: off, '
                     'train normally). Paper: L2 trained at 475, fine-tuned at 800.')
flags.DEFINE_float('finetune_epochs', 1.5, 'FixRes: fine-tuning length in epochs of --labeled.')
flags.DEFINE_float('finetune_learning_rate', 0.01, 'FixRes: SGD learning rate (cosine to 0).')
FLAGS = flags.FLAGS


def fixres_config_from_flags():
  """Returns the FixResConfig the parsed flags describe (for --finetune_resolution > 0)."""
  return fixres.FixResConfig(
      source_dir=FLAGS.init_checkpoint, model_dir=FLAGS.model_dir, labeled=FLAGS.labeled,
      resolution=FLAGS.finetune_resolution, epochs=FLAGS.finetune_epochs,
      trainable_from=FLAGS.trainable_from or None, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.finetune_learning_rate, data_dir=FLAGS.data_dir or None,
      label_offset=FLAGS.label_offset, seed=FLAGS.seed, log_every=FLAGS.log_every)


def config_from_flags():
  """Returns the TrainConfig the parsed flags describe."""
  values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(trainer.TrainConfig)}
  for name in ('pseudo', 'eval_data', 'data_dir', 'tpu', 'trainable_from', 'init_checkpoint',
               'source_cache_dir'):
    values[name] = values[name] or None
  return trainer.TrainConfig(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger('noisy_student_tf').setLevel(std_logging.INFO)
  try:
    if FLAGS.finetune_resolution:
      result = fixres.finetune(fixres_config_from_flags())
      print(json.dumps(result, indent=2, sort_keys=True))
      return
    config = config_from_flags()
    config.validate()
    strategy_lib.split_cpu(FLAGS.num_cpu_devices)
    result = trainer.train(config)
  except (ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    sys.exit(f'ns-train: error: {e}')
  print(json.dumps(result, indent=2, sort_keys=True))


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
