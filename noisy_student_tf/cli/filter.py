"""ns-filter: keep confident pseudo-labels and balance them per class (Noisy Student filtering).

  ns-filter --input=W/gen0/pseudo --output_dir=W/gen0/balanced --threshold=0.3 --per_class=130000

Every flag is a field of selftrain.filter.FilterConfig.
"""

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.cli import config_flags
from noisy_student_tf.selftrain import filter as filter_lib

FLAGS = flags.FLAGS
config_flags.define(filter_lib.FilterConfig)


def main(argv):
  """Runs the filter with the flags' values; exits non-zero with the message on bad input."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.input or not FLAGS.output_dir:
    raise app.UsageError('--input and --output_dir are required')
  config = filter_lib.FilterConfig(**config_flags.values(filter_lib.FilterConfig))
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
