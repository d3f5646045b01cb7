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

from noisy_student_tf.data import preprocessing

FLAGS = flags.FLAGS
flags.DEFINE_string('model_dir', None, 'A complete model dir (config.json + final/*.weights.h5) '
                    'written by ns-train or tools/convert_checkpoint.py.')
flags.DEFINE_string('export_dir', None, 'TF Serving base path: the export goes to '
                    'EXPORT_DIR/<version>/.')
flags.DEFINE_integer('version', None, 'Version folder to write (a positive integer not yet '
                     'used). Unset: one more than the highest existing version (1 when none).')
flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'Which final weights to export.')
flags.DEFINE_integer('top_k', 5, 'Classes per image in the top_k_* outputs (capped at the '
                     'number of classes).')
flags.DEFINE_string('labels_file', None, 'Text file with one class name per line for '
                    'top_k_names. Unset: the class names of the model dir\'s config.json, else '
                    'the class indices.')
flags.DEFINE_integer('resolution', None, 'Input size to serve at. Unset: the model\'s own.')
flags.DEFINE_string('model_name', 'noisy_student', 'Model name in the warm-up requests (use the '
                    'name of the models.config entry).')
flags.DEFINE_list('warmup_images', [], 'Encoded image files to use in the warm-up requests. '
                  'Unset: a synthetic image.')
flags.DEFINE_list('warmup_batch_sizes', ['1', '32'], 'serving_default batch sizes TF Serving '
                  'replays at load time.')
flags.DEFINE_boolean('verify', True, 'Load the staged export and replay the warm-up requests '
                     'before publishing it.')
flags.DEFINE_integer('max_image_pixels', preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'serving_default '
                     'answers InvalidArgument for images with more pixels (height x width read '
                     'from the header, before decoding; recorded in export.json). 0: no limit.')


def config_from_flags():
  """Turns the flags into an ExportConfig; raises app.UsageError for missing or malformed ones."""
  from noisy_student_tf.export import saved_model  # pylint: disable=g-import-not-at-top
  if not FLAGS.model_dir or not FLAGS.export_dir:
    raise app.UsageError('--model_dir and --export_dir are required')
  try:
    batch_sizes = tuple(int(b) for b in FLAGS.warmup_batch_sizes)
  except ValueError:
    raise app.UsageError(f'--warmup_batch_sizes must be integers, got '
                         f'{FLAGS.warmup_batch_sizes}') from None
  return saved_model.ExportConfig(
      model_dir=FLAGS.model_dir, export_dir=FLAGS.export_dir, version=FLAGS.version,
      weights=FLAGS.weights, top_k=FLAGS.top_k, labels_file=FLAGS.labels_file,
      resolution=FLAGS.resolution, model_name=FLAGS.model_name,
      warmup_images=tuple(FLAGS.warmup_images), warmup_batch_sizes=batch_sizes,
      verify=FLAGS.verify, max_image_pixels=FLAGS.max_image_pixels)


def main(argv):
  """Exports with the flags' values; exits non-zero with the message on bad input."""
  del argv
  from noisy_student_tf.export import saved_model  # pylint: disable=g-import-not-at-top
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
