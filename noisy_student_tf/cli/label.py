"""ns-label: the un-noised teacher writes pseudo-label records for every unlabeled image.

  ns-label --model_dir=W/gen0/model --unlabeled=images:/data/unlabeled/*.jpg \
      --output_dir=W/gen0/pseudo --label_type=soft --num_shards=128 --shard_index=7
"""

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.data import preprocessing

FLAGS = flags.FLAGS
flags.DEFINE_string('model_dir', None, 'The teacher: a model dir written by ns-train.')
flags.DEFINE_string('unlabeled', None, 'Source spec of the images to label, e.g. '
                    'images:/data/*.jpg, folder:PATH, tfds:cifar10:train (labels ignored).')
flags.DEFINE_string('output_dir', None, 'Where the record shards, stats.json and plot.png go.')
flags.DEFINE_enum('label_type', 'soft', ['soft', 'hard'], 'soft: the teacher\'s probabilities; '
                  'hard: one-hot argmax.')
flags.DEFINE_float('temperature', 1.0, 'Softmax temperature of soft labels (> 0).')
flags.DEFINE_integer('top_k', None, 'Store only the k most probable classes (ImageNet scale); '
                     'unset: all classes.')
flags.DEFINE_integer('num_shards', 1, 'Split the source into this many record shards.')
flags.DEFINE_integer('shard_index', None, 'Label only this shard (one worker of num_shards); '
                     'unset: every shard not yet done.')
flags.DEFINE_integer('batch_size', 256, 'Images per inference batch.')
flags.DEFINE_integer('resolution', None, 'Test resolution (default: the teacher\'s).')
flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'Which final weights of the teacher.')
flags.DEFINE_integer('generation', 0, 'Self-training generation of the teacher (recorded).')
flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data dir (tfds: sources).')
flags.DEFINE_integer('label_offset', 0, 'Subtracted from stored labels of tfrecord: sources.')
flags.DEFINE_integer('max_image_pixels', preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Skip (and count '
                     'as too large) images with more pixels, height x width read from the header '
                     'before decoding. 0: no limit.')


def main(argv):
  """Labels with the flags' values; exits non-zero with the message on bad input."""
  del argv
  from noisy_student_tf.selftrain import label as label_lib  # pylint: disable=g-import-not-at-top
  for name in ('model_dir', 'unlabeled', 'output_dir'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  config = label_lib.LabelConfig(
      model_dir=FLAGS.model_dir, unlabeled=FLAGS.unlabeled, output_dir=FLAGS.output_dir,
      label_type=FLAGS.label_type, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
      num_shards=FLAGS.num_shards, shard_index=FLAGS.shard_index, batch_size=FLAGS.batch_size,
      resolution=FLAGS.resolution, weights=FLAGS.weights, generation=FLAGS.generation,
      data_dir=FLAGS.data_dir, label_offset=FLAGS.label_offset,
      max_image_pixels=FLAGS.max_image_pixels)
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
