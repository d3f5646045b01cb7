"""ns-label: the un-noised teacher writes pseudo-label records for every unlabeled image.

  ns-label --model_dir=W/gen0/model --unlabeled=images:/data/unlabeled/*.jpg \
      --output_dir=W/gen0/pseudo --label_type=soft --num_shards=128 --shard_index=7

Every flag is a field of selftrain.label.LabelConfig.
"""

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.cli import config_flags
from noisy_student_tf.selftrain import label as label_lib

FLAGS = flags.FLAGS
config_flags.define(label_lib.LabelConfig)


def main(argv):
  """Labels with the flags' values; exits non-zero with the message on bad input."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('model_dir', 'unlabeled', 'output_dir'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  config = label_lib.LabelConfig(**config_flags.values(label_lib.LabelConfig))
  try:
    stats = label_lib.label(config)
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(f'ns-label: {e}') from None
  if stats['complete']:
    print(f'ns-label: {stats["count"]} images labeled into {FLAGS.output_dir} '
          f'({stats["corrupt_skipped"]} corrupt, {stats["too_large_skipped"]} too large skipped)')
  else:
    print(f'ns-label: {stats["shards_done"]} of {stats["num_shards"]} shards done')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
