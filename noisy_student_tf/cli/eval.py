"""ns-eval: top-1, top-5 and loss of a model dir on a labeled source, EMA weights by default.

  ns-eval --model_dir=/work/gen1 --eval_data=folder:/data/cifar10/test --output=/work/gen1/eval.json

Writes a JSON file with top1, top5, loss, num_examples (default MODEL_DIR/eval.json) and prints a
markdown table row.
"""

import dataclasses
import json
import os
import sys
from typing import Optional

from absl import app, flags, logging

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import progress as progress_lib
from noisy_student_tf.cli import config_flags
from noisy_student_tf.data import preprocessing
from noisy_student_tf.evaluate import evaluator, suites
from noisy_student_tf.settings import setting



@dataclasses.dataclass(frozen=True)
class EvalRun:
  """ns-eval's own settings; the evaluation's are suites.SuiteOptions."""
  model_dir: str = setting('', 'The trained model dir to evaluate.')
  suite: Optional[str] = setting(None, 'Run a robustness suite instead of plain evaluation: '
                                 'imagenet_a, imagenet_c (with --eval_data: clean data for '
                                 'relative mCE), imagenet_p (--imagenet_p_dir) or corruptions (TFDS '
                                 'ImageNet-C corruptions of --eval_data). Writes '
                                 '<suite>.json/.md/.png in --output_dir.', choices=suites.SUITES)
  output: Optional[str] = setting(None, 'Plain evaluation: JSON result file (default: '
                                  'MODEL_DIR/eval.json, or MODEL_DIR/eval-<resolution>.json at a '
                                  'non-default resolution).')
  label_offset: int = setting(0, 'Subtracted from tfrecord: labels (1 for 1-based ImageNet).')
  skip_corrupt: bool = setting(False, 'Skip undecodable images instead of failing.')
  max_image_pixels: int = setting(preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Refuse images with more '
                                  'pixels (height x width from the header, before decoding) like '
                                  'corrupt ones (see --skip_corrupt). 0: no limit.')
  progress: str = progress_lib.mode_setting()


config_flags.define(EvalRun)
config_flags.define(suites.SuiteOptions)
FLAGS = flags.FLAGS


def run_suite_from_flags():
  """Runs --suite with the flags as arguments; returns the result dict."""
  options = suites.SuiteOptions(**config_flags.values(suites.SuiteOptions))
  if not options.output_dir:
    options = dataclasses.replace(options, output_dir=os.path.join(FLAGS.model_dir, 'robustness'))
  return suites.run_suite(FLAGS.suite, FLAGS.model_dir, options, progress=FLAGS.progress)


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
    for more_dir, files in result.get('more', {}).items():
      print(f'{more_dir}:')
      print(open(files['markdown']).read())
      print('wrote ' + ', '.join(files.values()))
    return
  try:
    if not FLAGS.model_dir or not FLAGS.eval_data:
      raise ValueError('--model_dir and --eval_data are required')
    result = evaluator.evaluate_model_dir(
        FLAGS.model_dir, FLAGS.eval_data, resolution=FLAGS.resolution, weights=FLAGS.weights,
        batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir or None,
        label_offset=FLAGS.label_offset, skip_corrupt=FLAGS.skip_corrupt,
        max_image_pixels=FLAGS.max_image_pixels, max_examples=FLAGS.max_examples,
        sample_seed=FLAGS.sample_seed, progress=FLAGS.progress)
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
