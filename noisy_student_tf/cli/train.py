"""ns-train: trains a teacher or a student EfficientNet (see noisy_student_tf.train.trainer).

  ns-train --flagfile=flags/cifar10_supervised.cfg --model_dir=/tmp/cifar_b0
  ns-train --model=b0 --labeled=folder:/data/train --pseudo='pseudo:/work/balanced/*.tfrecord' \
      --unlabeled_ratio=3 --init_checkpoint=/work/gen0 --model_dir=/work/gen1

Every flag is a field of TrainConfig; rerunning the same command resumes from MODEL_DIR/ckpt.
"""

import json
import logging as std_logging
import sys

from absl import app, flags, logging

from noisy_student_tf.cli import config_flags
from noisy_student_tf.train import fixres
from noisy_student_tf.train import strategy as strategy_lib
from noisy_student_tf.train import trainer

FIXRES_FLAGS = ('resolution', 'epochs', 'steps', 'learning_rate', 'momentum', 'bn_momentum',
                'label_smoothing')

config_flags.define(trainer.TrainConfig)
config_flags.define_num_cpu_devices()
# FixRes (noisy_student_tf.train.fixres): with --finetune_resolution, ns-train fine-tunes the model
# dir --init_checkpoint into --model_dir instead of training (also uses --labeled, --batch_size,
# --trainable_from, --data_dir, --label_offset, --seed, --log_every).
config_flags.define(fixres.FixResConfig, prefix='finetune_', only=FIXRES_FLAGS)
FLAGS = flags.FLAGS


def fixres_config_from_flags():
  """Returns the FixResConfig the parsed flags describe (for --finetune_resolution > 0)."""
  train = config_from_flags()
  return fixres.FixResConfig(
      source_dir=train.init_checkpoint, model_dir=train.model_dir, labeled=train.labeled,
      trainable_from=train.trainable_from, batch_size=train.batch_size, data_dir=train.data_dir,
      label_offset=train.label_offset, seed=train.seed, log_every=train.log_every,
      **config_flags.values(fixres.FixResConfig, prefix='finetune_', only=FIXRES_FLAGS))


def config_from_flags():
  """Returns the TrainConfig the parsed flags describe."""
  return trainer.TrainConfig(**config_flags.values(trainer.TrainConfig))


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
