"""Input pipeline throughput: images per second, in total and per CPU core.

Rows: (a) the teacher's labeling / eval pipeline (decode, center crop, normalise) and (b) the
student's training pipeline with RandAugment(2, 27) (decode, random crop, flip, 2 official ops,
normalise, one-hot targets), at 224 px on CIFAR-10 JPEGs upscaled to 256 px and re-encoded, and
at 32 px on the original CIFAR-10 JPEGs (small-image mode).  Peers: the same training pipeline
without noise, and with keras-cv's own RandAugment layer (magnitude 1.0, its maximum) in place
of ours.

  python benchmarks/input_pipeline.py [--seconds=10] [--images=400] [--output_dir=DIR]

Per core: total / cores, and images per CPU-second of the process (load-independent: on a
shared machine the wall-clock rate says more about the neighbours than about the pipeline).
Images are read once into memory (the source is cached and repeated), so the numbers measure
CPU work, not disk.  Writes input_pipeline.json and input_pipeline.md to --output_dir.
"""

import json
import os
import tarfile
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging
import dataclasses
import numpy as np
import tensorflow as tf

from noisy_student_tf.data import augment, pipeline, preprocessing, sources
from noisy_student_tf.model_dir import InputConvention, atomic_write_text

flags.DEFINE_string('cifar10_tar', os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                                                'data', 'cifar10-jpeg.tar.gz'),
                    'Path of cifar10-jpeg.tar.gz (train/<class>/*.jpg).')
flags.DEFINE_integer('images', 400, 'Number of distinct CIFAR-10 images to cycle through.')
flags.DEFINE_float('seconds', 10.0, 'Measured seconds per row (after warm-up).')
flags.DEFINE_integer('batch_size', 64, 'Batch size of every pipeline.')
flags.DEFINE_integer('large_source_px', 256, 'Side of the upscaled JPEGs for the 224 px rows.')
flags.DEFINE_string('output_dir', None, 'Where to write input_pipeline.{json,md}; none: print only.')
flags.DEFINE_list('rows', [], 'Only these row names (default: all).')
FLAGS = flags.FLAGS

CONV = InputConvention()


def extract_images(tar_path, n, small_dir, large_dir, upscale_px):
  """Writes n class-balanced train JPEGs of the archive into small_dir/<class>/ as they are and
  into large_dir/<class>/ upscaled (bicubic, clipped) to upscale_px and re-encoded at quality 95."""
  per_class = max(1, n // 10)
  counts = {}
  with tarfile.open(tar_path) as tar:
    for member in tar:
      parts = member.name.split('/')
      if not member.isfile() or len(parts) < 3 or parts[-3] != 'train':
        continue
      cls = parts[-2]
      if counts.get(cls, 0) >= per_class:
        continue
      counts[cls] = counts.get(cls, 0) + 1
      data = tar.extractfile(member).read()
      image = tf.image.resize(tf.cast(tf.io.decode_jpeg(data), tf.float32),
                              [upscale_px, upscale_px], 'bicubic')
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
      for folder, payload in ((small_dir, data),
                              (large_dir, tf.io.encode_jpeg(image, quality=95).numpy())):
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        with open(os.path.join(folder, cls, parts[-1]), 'wb') as f:
          f.write(payload)
      if sum(counts.values()) >= per_class * 10:
        break


def cached(source):
  """The source with its encoded bytes held in memory and repeated forever."""
  return dataclasses.replace(source, dataset=source.dataset.cache().repeat())


def peer_train_dataset(source, resolution, small_image, batch_size):
  """The training pipeline with keras-cv's RandAugment(2 ops, magnitude 1.0) per image."""
  import keras_cv
  kcv = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                    magnitude=1.0)

  def kcv_augment(image):
    return tf.cast(tf.clip_by_value(tf.round(kcv(tf.cast(image, tf.float32))), 0, 255), tf.uint8)

  def prepare(d):
    image = preprocessing.train_crop(preprocessing.decode(d['encoded']), resolution, CONV,
                                     small_image, augment=kcv_augment)
    return preprocessing.normalize(image, CONV), tf.one_hot(d['label'], 10)

  ds = source.dataset.shuffle(1000).map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                                        deterministic=False)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(ds, batch_size, seconds, warmup_batches=3):
  """Iterates `ds` for about `seconds` after warm-up batches; returns (images per wall-clock
  second, images per CPU-second of this process).  The second is what one core delivers when
  not shared: it does not depend on other processes' load, unlike the first."""
  it = iter(ds)
  for _ in range(warmup_batches):
    next(it)
  n, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(it)
    n += batch_size
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  return n / wall, n / max(cpu, 1e-9)


def build_rows(large, small, batch_size):
  """(name, resolution, description, dataset factory) of every benchmark row."""
  def ev(src, r, small_image):
    return lambda: pipeline.make_eval_dataset(src, batch_size=batch_size, resolution=r,
                                              convention=CONV, small_image=small_image)

  def tr(src, r, small_image, n, m):
    return lambda: pipeline.make_train_dataset(
        src, batch_size=batch_size, resolution=r, num_classes=10, convention=CONV,
        small_image=small_image, randaug_layers=n, randaug_magnitude=m, shuffle_buffer=1000)

  rows = []
  for px, src, small_image in ((224, large, False), (32, small, True)):
    rows += [
        (f'eval_{px}', px, 'labeling/eval: decode, center crop, normalise', ev(src, px, small_image)),
        (f'train_noaug_{px}', px, 'training without noise: decode, crop, flip',
         tr(src, px, small_image, 0, 0)),
        (f'train_ra2x27_{px}', px, 'training + our RandAugment(2, 27)',
         tr(src, px, small_image, 2, 27)),
        (f'peer_kerascv_ra_{px}', px, "training + keras-cv RandAugment(2, magnitude 1.0)",
         lambda s=src, p=px, sm=small_image: peer_train_dataset(s, p, sm, batch_size)),
    ]
  return rows


def markdown(results, cores, load):
  lines = [f'Input pipeline throughput on {cores} CPU cores (load average at start {load:.1f}); '
           'img/s per core = total / cores; img per CPU-s = images / CPU-seconds this process '
           'used (per-core throughput independent of other load).', '',
           '| row | px | what | img/s total | img/s per core | img per CPU-s | '
           'CPU-s ratio vs keras-cv RandAugment |',
           '|---|---|---|---|---|---|---|']
  peers = {r['px']: r['img_per_cpu_s'] for r in results if r['name'].startswith('peer_')}
  for r in results:
    ratio = (f"{r['img_per_cpu_s'] / peers[r['px']]:.2f}x"
             if r['px'] in peers and 'ra2x27' in r['name'] else '')
    lines.append(f"| {r['name']} | {r['px']} | {r['what']} | {r['img_per_s']:.0f} | "
                 f"{r['img_per_s_per_core']:.0f} | {r['img_per_cpu_s']:.0f} | {ratio} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cores = os.cpu_count()
  load = os.getloadavg()[0]
  tmp = tempfile.mkdtemp(prefix='ns-bench-')
  logging.info('extracting %d CIFAR-10 images (and %d px upscaled copies) into %s', FLAGS.images,
               FLAGS.large_source_px, tmp)
  small_dir, large_dir = os.path.join(tmp, 'small'), os.path.join(tmp, 'large')
  extract_images(FLAGS.cifar10_tar, FLAGS.images, small_dir, large_dir, FLAGS.large_source_px)
  large = cached(sources.open_source(f'folder:{large_dir}'))
  small = cached(sources.open_source(f'folder:{small_dir}'))
  results = []
  for name, px, what, factory in build_rows(large, small, FLAGS.batch_size):
    if FLAGS.rows and name not in FLAGS.rows:
      continue
    rate, per_cpu_s = measure(factory(), FLAGS.batch_size, FLAGS.seconds)
    results.append({'name': name, 'px': px, 'what': what, 'img_per_s': rate,
                    'img_per_s_per_core': rate / cores, 'img_per_cpu_s': per_cpu_s})
    logging.info('%-22s %8.0f img/s  %6.0f img/s/core  %6.0f img/CPU-s', name, rate,
                 rate / cores, per_cpu_s)
  table = markdown(results, cores, load)
  print(table)
  if FLAGS.output_dir:
    atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline.json'),
                      json.dumps({'cores': cores, 'load_average': load, 'rows': results},
                                 indent=2))
    atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline.md'), table)


if __name__ == '__main__':
  app.run(main)
