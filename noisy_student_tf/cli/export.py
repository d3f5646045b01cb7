"""ns-export: a trained model dir -> a TF Serving SavedModel in EXPORT_DIR/<version>/.

  ns-export --model_dir=work/gen1 --export_dir=export/noisy_student

Signatures: `serving_default` (image_bytes: encoded JPEG/PNG strings) and `predict_images` (float
RGB 0-255 images at the model's resolution), both returning probabilities, top_k_classes,
top_k_scores and top_k_names.  Also writes assets.extra/tf_serving_warmup_requests and
assets.extra/export.json.  Check the result with tools/serving_check.py EXPORT_DIR.
"""

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.cli import config_flags
from noisy_student_tf.export import saved_model

FLAGS = flags.FLAGS
config_flags.define(saved_model.ExportConfig)


def config_from_flags():
  """Turns the flags into an ExportConfig; raises app.UsageError for missing or malformed ones."""
  if not FLAGS.model_dir or not FLAGS.export_dir:
    raise app.UsageError('--model_dir and --export_dir are required')
  try:
    return saved_model.ExportConfig(**config_flags.values(saved_model.ExportConfig))
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def main(argv):
  """Exports with the flags' values; exits non-zero with the message on bad input."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = config_from_flags()
  try:
    result = saved_model.export(config)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    logging.error('%s', e)
    raise SystemExit(f'ns-export: {e}') from None
  print(f'ns-export: {config.model_dir} ({config.weights} weights, '
        f'{result.info["resolution"]} px, {result.info["num_classes"]} classes) -> {result.path} '
        f'(version {result.version}, {result.seconds:.1f} s)')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
