"""ns-filter: keep confident pseudo-labels and balance them per class (Noisy Student filtering).

  ns-filter --input=W/gen0/pseudo --output_dir=W/gen0/balanced --threshold=0.3 --per_class=130000
"""

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_string('input', None, 'Pseudo-label records written by ns-label: a folder, a glob '
                    '(DIR/*.tfrecord) or pseudo:GLOB.')
flags.DEFINE_string('output_dir', None, 'Where the balanced shards, stats.json and plot.png go.')
flags.DEFINE_float('threshold', 0.3, 'Keep records whose teacher confidence is >= this, in [0, 1] '
                   '(paper: 0.3).')
flags.DEFINE_integer('per_class', None, 'K: records per class after balancing (the K most '
                     'confident; fewer are duplicated up to K). Paper: 130000 on ImageNet. Unset: '
                     'no balancing, every record above the threshold is kept once.')
flags.DEFINE_boolean('duplicate', True, 'Duplicate the records of classes with fewer than K.')
flags.DEFINE_integer('num_shards', 8, 'Number of output shards.')
flags.DEFINE_integer('num_classes', None, 'Number of classes (default: from the labeler\'s '
                     'stats.json next to the input).')
flags.DEFINE_integer('seed', 0, 'Seed for which records get an extra copy.')
flags.DEFINE_integer('read_batch', 8192, 'Records parsed per step.')


def main(argv):
  """Runs the filter with the flags' values; exits non-zero with the message on bad input."""
  del argv
  from noisy_student_tf.selftrain import filter as filter_lib  # pylint: disable=g-import-not-at-top
  if not FLAGS.input or not FLAGS.output_dir:
    raise app.UsageError('--input and --output_dir are required')
  config = filter_lib.FilterConfig(
      input=FLAGS.input, output_dir=FLAGS.output_dir, threshold=FLAGS.threshold,
      per_class=FLAGS.per_class, duplicate=FLAGS.duplicate, num_shards=FLAGS.num_shards,
      num_classes=FLAGS.num_classes, seed=FLAGS.seed, read_batch=FLAGS.read_batch)
  try:
    stats = filter_lib.filter_records(config)
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(f'ns-filter: {e}') from None
  print(f'ns-filter: {stats["num_input"]} records, {stats["num_above_threshold"]} above '
        f'{stats["threshold"]}, {stats["num_unique_kept"]} unique kept, {stats["num_output"]} '
        f'written to {FLAGS.output_dir} ({stats["records_per_second"]:.0f} records/s)')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
