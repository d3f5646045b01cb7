r"""Converts a folder tree FOLDER/<class>/<image> into ImageNet-style TFRecord shards.

The records carry the official build_imagenet_data.py keys (image/encoded with the file's bytes
unchanged, image/class/label = class index + --label_offset, image/class/synset = the class folder,
image/filename = the path relative to FOLDER, image/height|width, image/format, ...); classes are
numbered in sorted folder order, as the `folder:` source does.  Shards are written in parallel,
each under a temporary name renamed when whole; a rerun resumes, skipping finished shards.

Usage, train and validation shards from an ImageNet-style tree (val/ must hold the same class
folders as train/ so that the labels agree):

  python tools/make_tfrecords.py --input_dir=/data/imagenet/train --output_dir=/data/records \
      --prefix=train --num_shards=1024
  python tools/make_tfrecords.py --input_dir=/data/imagenet/val --output_dir=/data/records \
      --prefix=validation --num_shards=128

then read them with `tfrecord:/data/records/train-*` (label_offset=1 for the 1-based labels).
Prints the summary (also written as OUTPUT_DIR/<prefix>.manifest.json) as JSON at the end.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging

from noisy_student_tf.data import imagenet_records

FLAGS = flags.FLAGS
flags.DEFINE_string('input_dir', None, 'Folder tree INPUT_DIR/<class>/<image>; classes are the '
                    'sub-folders in sorted order.')
flags.DEFINE_string('output_dir', None, 'Folder for the shards and <prefix>.manifest.json '
                    '(created when missing).')
flags.DEFINE_string('prefix', 'train', 'Shard name prefix: <prefix>-00000-of-00016.')
flags.DEFINE_integer('num_shards', 16, 'Number of shard files (at most the number of images).',
                     lower_bound=1)
flags.DEFINE_integer('num_workers', 0, 'Processes writing shards in parallel; 0: '
                     'min(num_shards, CPUs).', lower_bound=0)
flags.DEFINE_bool('shuffle', True, 'Shuffle the examples across shards (each shard a mix of '
                  'classes); false keeps class order in contiguous slices.')
flags.DEFINE_integer('seed', 0, 'Seed of the shuffle.')
flags.DEFINE_integer('label_offset', 1, 'Added to the 0-based class index to give the stored '
                     'label; 1 is the ImageNet convention (0 = background).')
flags.mark_flags_as_required(['input_dir', 'output_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  try:
    summary = imagenet_records.write_imagenet_records(
        FLAGS.input_dir, FLAGS.output_dir, prefix=FLAGS.prefix, num_shards=FLAGS.num_shards,
        num_workers=FLAGS.num_workers or None, shuffle=FLAGS.shuffle, seed=FLAGS.seed,
        label_offset=FLAGS.label_offset)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f'make_tfrecords: {e}') from e
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main)
