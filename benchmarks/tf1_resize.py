"""How much the evaluation resize matters for a model trained with TF1's resize_bicubic.

The official EfficientNet / Noisy Student evaluation (google-research/noisystudent
preprocessing.py `center_crop`) crops the central square of side int(R / (R + 32) x min(h, w))
and calls TF1 `tf.image.resize_bicubic` on it (no half-pixel centres, a = -0.75), feeding the
float result, unclipped and unrounded, to the model.  Converted official checkpoints therefore
expect that.  This script compares, on real JPEGs of various sizes:

  reference    that official crop with tf.compat.v1.image.resize_bicubic, float
  bicubic      our evaluation crop with TF2 bicubic (the converted models' resize until now)
  bicubic_tf1  our evaluation crop with resize_method='bicubic_tf1' (now the converted default)
  bilinear     our default for models trained here

and writes the largest pixel difference against the reference (overall, and where the reference
needs no clipping: rounding alone), the mean one, and the top-1 agreement
of the model's predictions with its predictions on the reference, as OUT/tf1_resize.json and .md.

  python benchmarks/tf1_resize.py --model_dir=M --out=/tmp/tf1-resize \
      [--images=DIR | --cifar_dir=/tmp/cifar10/test] [--num_images=200] [--crop_padding=32]

Without --images, --num_images CIFAR-10 test images (one class after another) are upscaled with
PIL's bicubic to a random size of 64-512 px per side (seeded, not square) and saved as JPEGs of
quality 90 in OUT/images: real photographs at the sizes the crop sees, not CIFAR's 32 px.
"""

import dataclasses
import glob
import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

FLAGS = flags.FLAGS
METHODS = ('bicubic', 'bicubic_tf1', 'bilinear')


def define_flags():
  """This script's flags (only when run as a script)."""
  flags.DEFINE_string('model_dir', None, 'A trained or converted model dir.')
  flags.DEFINE_string('out', None, 'Output folder (results; the generated JPEGs).')
  flags.DEFINE_string('images', None, 'A folder of JPEGs to use (searched recursively).')
  flags.DEFINE_string('cifar_dir', '/tmp/cifar10/test', 'CIFAR-10 JPEG folder to make the '
                      'upscaled JPEGs from when --images is not given.')
  flags.DEFINE_integer('num_images', 200, 'How many images.')
  flags.DEFINE_integer('resolution', None, 'Evaluation resolution (default: the model\'s).')
  flags.DEFINE_integer('crop_padding', None, 'Crop padding (default: the model dir\'s).')
  flags.DEFINE_integer('seed', 0, 'Seed of the image sizes.')


def make_jpegs(cifar_dir, out_dir, num_images, seed):
  """Upscales `num_images` CIFAR-10 JPEGs (taken round-robin over the class folders) to random
  sizes of 64-512 px per side; returns the written paths (reused when already there)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  classes = sorted(os.listdir(cifar_dir))
  if not classes:
    raise ValueError(f'--cifar_dir {cifar_dir!r} has no class folders')
  per_class = [sorted(glob.glob(os.path.join(cifar_dir, c, '*.jpg'))) for c in classes]
  rng = np.random.RandomState(seed)
  paths = []
  for i in range(num_images):
    source = per_class[i % len(classes)][i // len(classes)]
    path = os.path.join(out_dir, f'{i:04d}.jpg')
    width, height = (int(v) for v in rng.randint(64, 513, size=2))
    if not os.path.exists(path):
      image = Image.open(source).convert('RGB').resize((width, height), Image.BICUBIC)
      image.save(path + '.tmp', 'JPEG', quality=90)
      os.replace(path + '.tmp', path)
    paths.append(path)
  return paths


def reference_crop(image, resolution, crop_padding):
  """The official evaluation crop of a uint8 [H, W, 3] tensor: float32 [R, R, 3], TF1 bicubic."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  h, w = image.shape[0], image.shape[1]
  side = int(resolution / (resolution + crop_padding) * min(h, w))
  top, left = (h - side + 1) // 2, (w - side + 1) // 2
  crop = image[top:top + side, left:left + side]
  return tf.compat.v1.image.resize_bicubic(crop[tf.newaxis], [resolution, resolution])[0]


def compare(model, convention, paths, resolution):
  """Returns {method: {max_pixel_diff, mean_pixel_diff, top1_agreement}} over `paths`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.data import preprocessing  # pylint: disable=g-import-not-at-top
  inputs = {m: [] for m in ('reference',) + METHODS}
  diffs = {m: [] for m in METHODS}
  inside = {m: [] for m in METHODS}  # where the reference needs no clipping
  for path in paths:
    encoded = tf.io.read_file(path)
    image = preprocessing.decode(encoded)
    ref = reference_crop(image, resolution, convention.crop_padding).numpy()
    inputs['reference'].append(ref)
    for m in METHODS:
      ours = preprocessing.eval_crop(encoded, resolution,
                                     dataclasses.replace(convention, resize_method=m)).numpy()
      inputs[m].append(ours)
      diff = np.abs(ours.astype(np.float64) - ref)
      diffs[m].append(diff)
      inside[m].append(diff[(ref >= 0) & (ref <= 255)])
  preds = {}
  for m, images in inputs.items():
    x = preprocessing.normalize(np.stack(images), convention)
    preds[m] = np.argmax(model.predict(x, batch_size=50, verbose=0), axis=-1)
  return {m: {'max_pixel_diff': float(np.max([d.max() for d in diffs[m]])),
              'max_pixel_diff_unclipped': float(np.max([d.max() for d in inside[m] if d.size])),
              'clipped_fraction': float(1 - sum(d.size for d in inside[m]) /
                                        sum(d.size for d in diffs[m])),
              'mean_pixel_diff': float(np.mean([d.mean() for d in diffs[m]])),
              'top1_agreement': float(np.mean(preds[m] == preds['reference']))}
          for m in METHODS}


def write_report(out, results, info):
  """Writes OUT/tf1_resize.json and OUT/tf1_resize.md; returns the markdown."""
  from noisy_student_tf.selftrain import shards  # pylint: disable=g-import-not-at-top
  shards.write_json(os.path.join(out, 'tf1_resize.json'), {**info, 'methods': results})
  lines = [f"Against the official crop + TF1 resize_bicubic (float), {info['num_images']} JPEGs, "
           f"{info['resolution']} px, crop padding {info['crop_padding']}, model "
           f"{info['model_dir']}:", '',
           '| our resize | largest pixel difference | largest where the reference is inside '
           '[0, 255] | mean pixel difference | top-1 agreement |', '|---|---|---|---|---|']
  for m, r in results.items():
    lines.append(f"| {m} | {r['max_pixel_diff']:.2f} | {r['max_pixel_diff_unclipped']:.2f} | "
                 f"{r['mean_pixel_diff']:.3f} | {100 * r['top1_agreement']:.1f}% |")
  clipped = results['bicubic_tf1']['clipped_fraction']
  lines += ['', f'{100 * clipped:.3f}% of the reference values lie outside [0, 255] (bicubic '
            'overshoot), which our uint8 crops clip.']
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(out, 'tf1_resize.md'), 'w') as f:
    f.write(text)
  return text


def main(argv):
  del argv
  from noisy_student_tf import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
  if not FLAGS.model_dir or not FLAGS.out:
    raise app.UsageError('--model_dir and --out are required')
  if not model_dir_lib.is_complete(FLAGS.model_dir):
    raise app.UsageError(f'--model_dir {FLAGS.model_dir!r} is not a complete model dir')
  if FLAGS.images:
    paths = sorted(glob.glob(os.path.join(FLAGS.images, '**', '*.jp*g'), recursive=True))
    paths = paths[:FLAGS.num_images]
    if not paths:
      raise app.UsageError(f'--images {FLAGS.images!r} has no JPEGs')
  else:
    paths = make_jpegs(FLAGS.cifar_dir, os.path.join(FLAGS.out, 'images'), FLAGS.num_images,
                       FLAGS.seed)
  config = model_dir_lib.read_config(FLAGS.model_dir)
  resolution = FLAGS.resolution or config.model.resolution
  convention = config.input
  if FLAGS.crop_padding is not None:
    convention = dataclasses.replace(convention, crop_padding=FLAGS.crop_padding)
  model, _ = model_dir_lib.load_model(FLAGS.model_dir, resolution=resolution)
  results = compare(model, convention, paths, resolution)
  info = {'model_dir': FLAGS.model_dir, 'num_images': len(paths), 'resolution': resolution,
          'crop_padding': convention.crop_padding}
  text = write_report(FLAGS.out, results, info)
  logging.info('tf1_resize: wrote %s', FLAGS.out)
  print(text)


if __name__ == '__main__':
  define_flags()
  app.run(main)
