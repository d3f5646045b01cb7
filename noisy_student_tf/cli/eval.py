"""ns-eval: top-1, top-5 and loss of a model dir on a labeled source, EMA weights by default.

  ns-eval --model_dir=/work/gen1 --eval_data=folder:/data/cifar10/test --output=/work/gen1/eval.json

Writes a JSON file with top1, top5, loss, num_examples (default MODEL_DIR/eval.json) and prints a
markdown table row.
"""

import json
import os
import sys

from absl import app, flags, logging

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import preprocessing
from noisy_student_tf.evaluate import evaluator, suites

flags.DEFINE_string('model_dir', None, 'The trained model dir to evaluate.')
flags.DEFINE_string('eval_data', None, 'Labeled source spec: folder:PATH, tfds:NAME:SPLIT, '
                    'tfrecord:GLOB, digits:test.')
flags.DEFINE_integer('resolution', None, 'Evaluation resolution (default: the training one).')
flags.DEFINE_enum('weights', 'ema', sorted(model_dir_lib.WEIGHT_FILES), 'Which final weights.')
flags.DEFINE_integer('batch_size', 256, 'Evaluation batch size.')
flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data dir for tfds: sources.')
flags.DEFINE_integer('label_offset', 0, 'Subtracted from tfrecord: labels (1 for 1-based ImageNet).')
flags.DEFINE_bool('skip_corrupt', False, 'Skip undecodable images instead of failing.')
flags.DEFINE_integer('max_image_pixels', preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Refuse images '
                     'with more pixels (height x width from the header, before decoding) like '
                     'corrupt ones (see --skip_corrupt). 0: no limit.')
flags.DEFINE_string('output', None, 'JSON result file (default: MODEL_DIR/eval.json, or '
                    'MODEL_DIR/eval-<resolution>.json at a non-default resolution).')
# Robustness suites (noisy_student_tf.evaluate.suites).
flags.DEFINE_enum('suite', None, list(suites.SUITES), 'Run a robustness suite instead of plain '
                  'evaluation: imagenet_a, imagenet_c (with --eval_data: clean data for relative '
                  'mCE), imagenet_p (--imagenet_p_dir) or corruptions (TFDS ImageNet-C corruptions '
                  'of --eval_data). Writes <suite>.json/.md/.png in --output_dir.')
flags.DEFINE_string('baseline_model_dir', None, 'Suites: a second model dir (e.g. the teacher) '
                    'whose errors normalise the model\'s (CE / mCE vs baseline).')
flags.DEFINE_list('severities', ['1', '2', '3', '4', '5'], 'Suites: corruption severities (1..5).')
flags.DEFINE_list('corruptions', None, 'Suites: corruption / perturbation names (default: every '
                  'benchmark one available here).')
flags.DEFINE_string('output_dir', None, 'Suites: where the results go (default '
                    'MODEL_DIR/robustness).')
flags.DEFINE_string('imagenet_c_dir', None, 'imagenet_c suite: a local ImageNet-C copy '
                    'ROOT/<corruption>/<severity>/<wnid>/*.JPEG (default: TFDS '
                    'imagenet2012_corrupted in --data_dir).')
flags.DEFINE_string('imagenet_p_dir', None, 'imagenet_p suite: a local ImageNet-P copy '
                    'ROOT/<perturbation>/<wnid>/<name>.mp4.')
flags.DEFINE_integer('max_examples', None, 'Evaluate a seeded sample of N images of each source '
                     '(class-stratified where labels are known, uniform otherwise): the same '
                     'images for a model and its baseline.')
flags.DEFINE_integer('sample_seed', 0, 'Seed of the --max_examples sample.')
FLAGS = flags.FLAGS


def run_suite_from_flags():
  """Runs --suite with the flags as arguments; returns the result dict."""
  severities = [int(s) for s in FLAGS.severities]
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, 'robustness')
  return suites.run_suite(
      FLAGS.suite, FLAGS.model_dir, output_dir=output_dir, eval_data=FLAGS.eval_data,
      data_dir=FLAGS.data_dir, baseline_model_dir=FLAGS.baseline_model_dir,
      corruptions=tuple(FLAGS.corruptions) if FLAGS.corruptions else None,
      severities=tuple(severities), resolution=FLAGS.resolution, weights=FLAGS.weights,
      batch_size=FLAGS.batch_size, max_examples=FLAGS.max_examples, sample_seed=FLAGS.sample_seed,
      imagenet_c_dir=FLAGS.imagenet_c_dir, imagenet_p_dir=FLAGS.imagenet_p_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  if FLAGS.suite:
    try:
      if not FLAGS.model_dir:
        raise ValueError('--model_dir is required')
      result = run_suite_from_flags()
    except (ValueError, FileNotFoundError) as e:
      logging.error('%s', e)
      sys.exit(f'ns-eval: error: {e}')
    print(open(result['files']['markdown']).read())
    print('wrote ' + ', '.join(result['files'].values()))
    return
  try:
    if not FLAGS.model_dir or not FLAGS.eval_data:
      raise ValueError('--model_dir and --eval_data are required')
    result = evaluator.evaluate_model_dir(
        FLAGS.model_dir, FLAGS.eval_data, resolution=FLAGS.resolution, weights=FLAGS.weights,
        batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, label_offset=FLAGS.label_offset,
        skip_corrupt=FLAGS.skip_corrupt, max_image_pixels=FLAGS.max_image_pixels,
        max_examples=FLAGS.max_examples, sample_seed=FLAGS.sample_seed)
  except (ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    sys.exit(f'ns-eval: error: {e}')
  result.update(model_dir=FLAGS.model_dir, eval_data=FLAGS.eval_data)
  output = FLAGS.output or os.path.join(
      FLAGS.model_dir, 'eval.json' if FLAGS.resolution is None else f'eval-{FLAGS.resolution}.json')
  model_dir_lib.atomic_write_text(output, json.dumps(result, indent=2, sort_keys=True))
  print('| model dir | data | weights | resolution | top-1 | top-5 | loss | examples |')
  print('|---|---|---|---|---|---|---|---|')
  print(f'| {FLAGS.model_dir} | {FLAGS.eval_data} | {result["weights"]} | {result["resolution"]} | '
        f'{result["top1"]:.4f} | {result["top5"]:.4f} | {result["loss"]:.4f} | '
        f'{result["num_examples"]} |')
  print(f'wrote {output}')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
