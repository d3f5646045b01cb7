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

--baseline=REV: every row is also measured with data/augment.py and data/preprocessing.py as
they are at git revision REV (the rest of the tree as it is now), in the same process,
alternating with today's code round by round (--rounds), so that both columns of a row see the
same load.  The table gives the median and the best round of each (on a loaded machine a round
can lose half its speed to other processes' cache traffic; the best round is the least
disturbed one), and the ratio of the medians.

--op_table: also the cost of every stage of the training pipeline alone (decode, the pipelines'
non-raising decode, random crop + resize, flip, each official RandAugment op at M = 27, the
whole RandAugment(2, 27), normalise + batch), in CPU-ms per image, for today's code and the
baseline (input_pipeline_ops.{json,md}).
"""

import importlib.util
import json
import os
import subprocess
import sys
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
flags.DEFINE_integer('warmup_batches', 3, 'Untimed batches of every dataset before the rounds '
                     '(after the shuffle buffer is full: tf.data.AUTOTUNE settles meanwhile).')
flags.DEFINE_integer('rounds', 3, 'Rounds per row (and variant), alternating; each lasts '
                     '--seconds / --rounds.')
flags.DEFINE_string('baseline', None, 'A git revision whose data/augment.py and '
                    'data/preprocessing.py are measured beside today\'s (none: today\'s only).')
flags.DEFINE_bool('baseline_pipeline', False, 'With --baseline: its data/pipeline.py too '
                  '(the pipelines\' structure, e.g. how decode errors are caught), not today\'s.')
flags.DEFINE_bool('op_table', False, 'Also measure every stage and RandAugment op alone.')
FLAGS = flags.FLAGS

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')

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


class Code:
  """The modules a variant's pipelines are built from: augment, pipeline, preprocessing."""

  def __init__(self, name, augment_module, pipeline_module, preprocessing_module):
    self.name = name
    self.augment = augment_module
    self.pipeline = pipeline_module
    self.preprocessing = preprocessing_module


def _load_module(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # AutoGraph looks functions' modules up there
  spec.loader.exec_module(module)
  return module


def _revision_text(revision, name):
  return subprocess.run(['git', '-C', REPO, 'show', f'{revision}:noisy_student_tf/data/{name}.py'],
                        check=True, capture_output=True, text=True).stdout


def load_baseline(revision, with_pipeline=False):
  """Code with data/augment.py and data/preprocessing.py as they are at git `revision`, and
  today's data/pipeline.py importing those two (so only their changes are compared), or with
  with_pipeline the revision's data/pipeline.py too."""
  folder = tempfile.mkdtemp(prefix='ns-baseline-')
  loaded = {}
  for name in ('preprocessing', 'augment'):
    text = _revision_text(revision, name)
    path = os.path.join(folder, f'{name}.py')
    with open(path, 'w') as f:
      f.write(text)
    loaded[name] = _load_module(f'ns_baseline_{name}', path)
  package = sys.modules['noisy_student_tf.data']
  saved = {name: (sys.modules[f'noisy_student_tf.data.{name}'], getattr(package, name))
           for name in loaded}
  try:  # `from noisy_student_tf.data import x` in pipeline.py finds the baseline's modules
    for name, module in loaded.items():
      sys.modules[f'noisy_student_tf.data.{name}'] = module
      setattr(package, name, module)
    pipeline_path = pipeline.__file__
    if with_pipeline:
      pipeline_path = os.path.join(folder, 'pipeline.py')
      with open(pipeline_path, 'w') as f:
        f.write(_revision_text(revision, 'pipeline'))
    baseline_pipeline = _load_module('ns_baseline_pipeline', pipeline_path)
  finally:
    for name, (module, attribute) in saved.items():
      sys.modules[f'noisy_student_tf.data.{name}'] = module
      setattr(package, name, attribute)
  return Code(f'{revision}', loaded['augment'], baseline_pipeline, loaded['preprocessing'])


def peer_train_dataset(source, resolution, small_image, batch_size, code):
  """The training pipeline with keras-cv's RandAugment(2 ops, magnitude 1.0) per image."""
  import keras_cv
  kcv = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                    magnitude=1.0)
  pre = code.preprocessing

  def kcv_augment(image):
    return tf.cast(tf.clip_by_value(tf.round(kcv(tf.cast(image, tf.float32))), 0, 255), tf.uint8)

  def prepare(d):
    image = pre.train_crop(pre.decode(d['encoded']), resolution, CONV, small_image,
                           augment=kcv_augment)
    return pre.normalize(image, CONV), tf.one_hot(d['label'], 10)

  ds = source.dataset.shuffle(1000).map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                                        deterministic=False)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _one_round(it, batch_size, seconds):
  n, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(it)
    n += batch_size
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  return n / wall, n / max(cpu, 1e-9)


def measure(factories, batch_size, seconds, rounds, warmup_batches):
  """Iterates every dataset of `factories` (variant -> dataset factory) for about
  seconds / rounds per round, the variants alternating round by round after warm-up batches.
  Returns variant -> list of (images per wall-clock second, images per CPU-second of this
  process) per round.  The second is what one core delivers when not shared: it depends far
  less on other processes' load than the first."""
  iterators = {}
  for variant, factory in factories.items():
    iterators[variant] = iter(factory())
    for _ in range(warmup_batches):
      next(iterators[variant])
  out = {variant: [] for variant in factories}
  for _ in range(rounds):
    for variant, it in iterators.items():
      out[variant].append(_one_round(it, batch_size, seconds / rounds))
  return out


def build_rows(large, small, batch_size):
  """(name, resolution, description, factory(code) -> dataset) of every benchmark row."""
  def ev(src, r, small_image):
    return lambda code: code.pipeline.make_eval_dataset(
        src, batch_size=batch_size, resolution=r, convention=CONV, small_image=small_image)

  def tr(src, r, small_image, n, m):
    return lambda code: code.pipeline.make_train_dataset(
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
         lambda code, s=src, p=px, sm=small_image: peer_train_dataset(s, p, sm, batch_size, code)),
    ]
  return rows


def summarize(rounds, cores):
  """Figures of one variant of one row from its rounds [(img/s, img per CPU-s)]: medians (the
  reported figure), best round, and every round."""
  wall, cpu = zip(*rounds)
  rate = float(np.median(wall))
  return {'img_per_s': rate, 'img_per_s_per_core': rate / cores,
          'img_per_cpu_s': float(np.median(cpu)), 'img_per_cpu_s_best': max(cpu),
          'rounds_img_per_cpu_s': list(cpu)}


def markdown(results, cores, load, baseline):
  prev = baseline is not None
  lines = [f'Input pipeline throughput on {cores} CPU cores (load average {load[0]:.1f} at the '
           f'start, {load[1]:.1f} at the end); img/s per core = total / cores; img per CPU-s = '
           'images / CPU-seconds this process used (per-core throughput, far less dependent on '
           'other load); median of the rounds, best round in brackets.', '']
  head = '| row | px | what | img/s total | img/s per core | img per CPU-s |'
  rule = '|---|---|---|---|---|---|'
  if prev:
    head += f' previous ({baseline}) img per CPU-s | new / previous |'
    rule += '---|---|'
  lines += [head + ' CPU-s ratio vs keras-cv RandAugment |', rule + '---|']
  peers = {r['px']: r['new']['img_per_cpu_s'] for r in results if r['name'].startswith('peer_')}
  for r in results:
    new = r['new']
    ratio = (f"{new['img_per_cpu_s'] / peers[r['px']]:.2f}x"
             if r['px'] in peers and 'ra2x27' in r['name'] else '')
    line = (f"| {r['name']} | {r['px']} | {r['what']} | {new['img_per_s']:.0f} | "
            f"{new['img_per_s_per_core']:.0f} | {new['img_per_cpu_s']:.0f} "
            f"({new['img_per_cpu_s_best']:.0f}) |")
    if prev:
      old = r.get('previous')
      line += (f" {old['img_per_cpu_s']:.0f} ({old['img_per_cpu_s_best']:.0f}) | "
               f"{new['img_per_cpu_s'] / old['img_per_cpu_s']:.2f}x |" if old else ' | |')
    lines.append(line + f' {ratio} |')
  return '\n'.join(lines) + '\n'


def op_cases(code, encoded, decoded, crops):
  """(stage, inputs, fn) of the op table: fn maps one element of `inputs` (encoded 256 px
  JPEGs, their decoded images, or 224 px training crops of them)."""
  pre, aug = code.preprocessing, code.augment
  ops = aug.build_ops(27)
  center = tf.constant([112, 112], tf.int32)
  cases = [('iterate + batch (floor)', crops, lambda x: x),
           ('decode (256 px JPEG)', encoded, lambda e: pre.decode(e, None)),
           ("pipelines' non-raising decode (header check)", encoded,
            lambda e: code.pipeline._try_decode(e)[0]),
           ('random crop + resize to 224', decoded,
            lambda x: pre.random_resized_crop(x, 224, CONV)),
           ('flip', crops, tf.image.random_flip_left_right)]
  cases += [(f'RandAugment op {name} (M = 27)', crops,
             lambda x, op=ops[name]: op(x, False, center)) for name in aug.OP_NAMES]
  ra = aug.make_randaugment(2, 27, 224)
  cases += [('RandAugment(2, 27), whole', crops, ra),
            ('normalise (+ float32 batch)', crops, lambda x: pre.normalize(x, CONV))]
  return cases


def op_table(codes, encoded_files, batch_size, seconds, rounds, warmup_batches):
  """CPU-ms per image of every op_cases stage, for every Code in `codes`: each stage a map
  over in-memory inputs, batched; every stage but the last two returns one pixel of its result
  (so that only the op is timed, not batching its output)."""
  encoded = [open(f, 'rb').read() for f in encoded_files]
  new = codes[0]
  decoded = [new.preprocessing.decode(e).numpy() for e in encoded]
  tf.random.set_seed(0)
  crops = np.stack([new.preprocessing.random_resized_crop(x, 224, CONV).numpy()
                    for x in decoded[:64]])
  decoded = np.stack([x for x in decoded if x.shape == decoded[0].shape])
  per_code = [op_cases(code, encoded, decoded, crops) for code in codes]
  results = []
  for k, (stage, _, _) in enumerate(per_code[0]):
    def factory(code_cases, last=(stage.startswith('normalise') or stage.startswith('iterate'))):
      _, inputs, fn = code_cases[k]
      def mapped(x):
        out = fn(x)
        return out if last else out[0, 0]
      ds = tf.data.Dataset.from_tensor_slices(inputs).repeat()
      return ds.map(mapped, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=False).batch(batch_size)
    rounds_by = measure({code.name: lambda c=cases: factory(c)
                         for code, cases in zip(codes, per_code)},
                        batch_size, seconds, rounds, warmup_batches)
    row = {'stage': stage}
    for code in codes:
      cpu = [r[1] for r in rounds_by[code.name]]
      row[code.name] = {'ms_per_image': 1e3 / float(np.median(cpu)),
                        'ms_per_image_best': 1e3 / max(cpu)}
    results.append(row)
    logging.info('%-45s %s', stage, '  '.join(
        f"{code.name}: {row[code.name]['ms_per_image']:.3f}" for code in codes))
  return results


def op_markdown(results, codes, load):
  names = [code.name for code in codes]
  lines = [f'CPU-milliseconds per image of every stage alone (224 px, load average '
           f'{load[0]:.1f} at the start, {load[1]:.1f} at the end); median of the rounds, best '
           'round in brackets.  RandAugment ops at M = 27 on 224 px training crops (signed '
           'ops with the positive sign, Cutout at the centre); a RandAugment(2, 27) image costs '
           'about twice the mean of the 16.', '',
           '| stage | ' + ' | '.join(f'{n} ms' for n in names) + ' |'
           + (' new / previous |' if len(names) > 1 else ''),
           '|---|' + '---|' * len(names) + ('---|' if len(names) > 1 else '')]
  for r in results:
    cells = [f"{r[n]['ms_per_image']:.3f} ({r[n]['ms_per_image_best']:.3f})" for n in names]
    ratio = (f" {r[names[0]]['ms_per_image'] / r[names[1]]['ms_per_image']:.2f}x |"
             if len(names) > 1 else '')
    lines.append(f"| {r['stage']} | " + ' | '.join(cells) + ' |' + ratio)
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  cores = os.cpu_count()
  load_start = os.getloadavg()[0]
  tmp = tempfile.mkdtemp(prefix='ns-bench-')
  logging.info('extracting %d CIFAR-10 images (and %d px upscaled copies) into %s', FLAGS.images,
               FLAGS.large_source_px, tmp)
  small_dir, large_dir = os.path.join(tmp, 'small'), os.path.join(tmp, 'large')
  extract_images(FLAGS.cifar10_tar, FLAGS.images, small_dir, large_dir, FLAGS.large_source_px)
  large = cached(sources.open_source(f'folder:{large_dir}'))
  small = cached(sources.open_source(f'folder:{small_dir}'))
  codes = [Code('new', augment, pipeline, preprocessing)]
  if FLAGS.baseline:
    codes.append(load_baseline(FLAGS.baseline, FLAGS.baseline_pipeline))
  results = []
  for name, px, what, factory in build_rows(large, small, FLAGS.batch_size):
    if FLAGS.rows and name not in FLAGS.rows:
      continue
    variants = codes[:1] if name.startswith('peer_') else codes
    rounds = measure({code.name: lambda c=code: factory(c) for code in variants},
                     FLAGS.batch_size, FLAGS.seconds, FLAGS.rounds, FLAGS.warmup_batches)
    row = {'name': name, 'px': px, 'what': what}
    for code, key in zip(variants, ('new', 'previous')):
      row[key] = summarize(rounds[code.name], cores)
    row.update({k: row['new'][k] for k in ('img_per_s', 'img_per_s_per_core', 'img_per_cpu_s')})
    results.append(row)
    logging.info('%-22s %s', name, '  '.join(
        f"{key}: {row[key]['img_per_cpu_s']:.0f} img/CPU-s (best {row[key]['img_per_cpu_s_best']:.0f})"
        for key in ('new', 'previous') if key in row))
  load = (load_start, os.getloadavg()[0])
  table = markdown(results, cores, load, FLAGS.baseline)
  print(table)
  ops, ops_table = None, None
  if FLAGS.op_table:
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(large_dir) for f in names)
    ops = op_table(codes, files[:200], FLAGS.batch_size, FLAGS.seconds, FLAGS.rounds,
                   FLAGS.warmup_batches)
    ops_load = (load[1], os.getloadavg()[0])
    ops_table = op_markdown(ops, codes, ops_load)
    print(ops_table)
  if FLAGS.output_dir:
    common = {'cores': cores, 'baseline': FLAGS.baseline,
              'baseline_pipeline': FLAGS.baseline_pipeline, 'rounds': FLAGS.rounds,
              'seconds': FLAGS.seconds, 'warmup_batches': FLAGS.warmup_batches,
              'command': ' '.join(sys.argv)}
    atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline.json'),
                      json.dumps({**common, 'load_average': load, 'rows': results}, indent=2))
    atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline.md'), table)
    if ops is not None:
      atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline_ops.json'),
                        json.dumps({**common, 'load_average': ops_load, 'stages': ops},
                                   indent=2))
      atomic_write_text(os.path.join(FLAGS.output_dir, 'input_pipeline_ops.md'), ops_table)


if __name__ == '__main__':
  app.run(main)
