"""ns-label's images per second against a bare batched forward pass of the same model.

Two sizes, each on real CIFAR-10 JPEGs (benchmarks/input_pipeline.py's extract_images):
  224 px  EfficientNet-B0, 1000 classes, on the JPEGs upscaled to 256 px and re-encoded;
  32 px   the CIFAR model of flags/cifar10_4000.cfg (small-image B0 at width/depth 0.5, 10
          classes) on the original 32 px JPEGs.
Untrained, seeded weights, written as a model dir.  Sides, at the same batch size:
  ns-label  label.label(LabelConfig(...)) over a folder: source of the JPEGs: read, decode, crop,
            normalise, predict, build and write the records of one shard, count the stats;
  bare      the same predict function (evaluate/evaluator.make_predict_fn) over the same images,
            already decoded and preprocessed (make_eval_dataset's batches held in memory).
Model loading and tracing are excluded from both: the model is loaded and its predict function
traced and warmed once, and label.label is handed that function (model_dir.load_model and
evaluator.make_predict_fn are patched while it runs).  Every predict call is timestamped (wall
and process CPU, all threads); the measured window runs from the start of call
`--warmup_batches` to the end of the loop (ns-label: its shard written, closed, renamed and its
stats written; bare: the last logits fetched), so the warm-up batches are excluded from both and
ns-label's last records are inside.  (ns-label's input pipeline may have run ahead during the
warm-up batches by the prefetch buffer's few batches: enough batches keep that small.)  The sides
run in alternation, `--repeats` times each; best of, and the median of the paired ratios (each
ns-label run against the bare run right after it).  The ns-label records are read back and their
probabilities compared with the softmax of the bare logits (same images, same order; within
1e-4, as oneDNN's sums are not bitwise reproducible).  The whole
label.label call (source listing, pipeline start, stats.json, plot.png) is reported beside.

Where the time goes: each stage alone over the same images, in CPU microseconds per image (best
of --repeats): read (the folder source's file reads and header reads, sources.read_chunks),
decode (tf.io.decode_image of every image, from bytes in memory, a map_fn over each batch:
libjpeg's share), preprocess (the rest of ns-label's input pipeline, label.labeling_dataset =
make_eval_dataset, over the folder: error catching, crop, normalise, batching; its whole time
less read and decode), model (the bare side), serialise (label.pseudo_records on the real
logits), write
(tf.io.TFRecordWriter); each built once and run once untimed first.

  python benchmarks/label_throughput.py [--sizes=224,32] [--repeats=5] [--output_dir=DIR]

Writes label_throughput.json and label_throughput.md to --output_dir.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

from noisy_student_tf import model_dir as model_dir_lib  # pylint: disable=wrong-import-position
from noisy_student_tf import models  # pylint: disable=wrong-import-position
from noisy_student_tf.data import pipeline, preprocessing, sources  # pylint: disable=wrong-import-position
from noisy_student_tf.evaluate import evaluator  # pylint: disable=wrong-import-position
from noisy_student_tf.selftrain import label  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_TAR = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
GOAL = 0.9
# (model config overrides, folder of input_pipeline.extract_images) of each size.
MODELS = {
    224: (dict(name='b0', num_classes=1000, resolution=224), 'large'),
    32: (dict(name='b0', num_classes=10, width=0.5, depth=0.5, resolution=32, small_image=True),
         'small'),
}
STAGES = ('read', 'decode', 'preprocess', 'model', 'serialise', 'write')


def make_teacher(path, overrides):
  """Writes an untrained model dir (seeded weights, 'ema') of models.make_config(**overrides);
  returns its ModelDirConfig."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  overrides = dict(overrides)
  config = models.make_config(overrides.pop('name'), overrides.pop('num_classes'), **overrides)
  model = models.build_from_config(config)
  dir_config = model_dir_lib.ModelDirConfig(
      model=config, class_names=[str(i) for i in range(config.num_classes)])
  model_dir_lib.write_config(str(path), dir_config)
  model_dir_lib.save_weights(str(path), model, 'ema')
  return dir_config


def keep_first(folder, per_class):
  """Deletes all but the first `per_class` files (by name) of every class folder of `folder`."""
  for cls in sorted(os.listdir(folder)):
    for name in sorted(os.listdir(os.path.join(folder, cls)))[per_class:]:
      os.remove(os.path.join(folder, cls, name))


class TimedPredict:
  """Wraps a predict function; records (wall, process CPU, batch size) at each call's start, and
  `end` (wall, process CPU) when the caller says the loop is over (mark_end)."""

  def __init__(self, fn):
    self.fn = fn
    self.calls = []
    self.end = None

  def __call__(self, images):
    self.calls.append((time.perf_counter(), time.process_time(), int(images.shape[0])))
    return self.fn(images)

  def mark_end(self):
    """Records the end of the measured loop."""
    self.end = (time.perf_counter(), time.process_time())

  def window(self, warmup):
    """(images, wall seconds, CPU seconds) from the start of call `warmup` to the end."""
    if len(self.calls) <= warmup or self.end is None:
      raise ValueError(f'{len(self.calls)} batches: need more than warmup_batches = {warmup}')
    start = self.calls[warmup]
    return (sum(c[2] for c in self.calls[warmup:]), self.end[0] - start[0],
            self.end[1] - start[1])


@contextlib.contextmanager
def preloaded(model, timed):
  """label.label uses `model` and the predict function `timed` (a TimedPredict) instead of loading
  and tracing its own (loading and tracing excluded, as on the bare side), and marks the end of
  timed's loop when its shard is written (records closed and renamed, shard stats written)."""
  saved = model_dir_lib.load_model, evaluator.make_predict_fn, label._label_shard  # pylint: disable=protected-access

  def label_shard(*args, **kwargs):
    stats = saved[2](*args, **kwargs)
    timed.mark_end()
    return stats

  model_dir_lib.load_model = lambda model_dir, **kwargs: (model, model_dir_lib.read_config(
      model_dir))
  evaluator.make_predict_fn = lambda _, **kwargs: timed
  label._label_shard = label_shard  # pylint: disable=protected-access
  try:
    yield
  finally:
    model_dir_lib.load_model, evaluator.make_predict_fn, label._label_shard = saved  # pylint: disable=protected-access


def cpu_seconds(fn):
  """(wall seconds, process CPU seconds) of calling fn()."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def drain(ds):
  """Iterates the dataset `ds` to its end."""
  for _ in ds:
    pass


def read_probabilities(folder):
  """The pseudo/probabilities [N, C] of the records in folder's shards, in file then record
  order (records with every class's probability)."""
  out = []
  for path in sorted(tf.io.gfile.glob(os.path.join(folder, '*.tfrecord'))):
    for batch in tf.data.TFRecordDataset(path).batch(1024):
      parsed = tf.io.parse_example(
          batch, {'pseudo/probabilities': tf.io.VarLenFeature(tf.float32)})
      out.append(tf.sparse.to_dense(parsed['pseudo/probabilities']).numpy())
  return np.concatenate(out)


def softmax(logits):
  """Softmax over the last axis, in float64."""
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def run_size(px, folder, tmp, args):
  """Measures one size; returns its result dict (sides, stages, checks)."""
  overrides, _ = MODELS[px]
  teacher = os.path.join(tmp, f'teacher{px}')
  dir_config = make_teacher(teacher, overrides)
  model, _ = model_dir_lib.load_model(teacher)
  predict = evaluator.make_predict_fn(model)
  spec = f'folder:{folder}'
  source = sources.open_source(spec)
  num = source.num_examples
  config = label.LabelConfig(model_dir=teacher, unlabeled=spec, output_dir='unused',
                             batch_size=args.batch_size, progress='none')

  def eval_dataset(src, counter=None):
    return label.labeling_dataset(src, config, dir_config, px, counter or pipeline.CorruptCounter())

  batches = [b['image'] for b in eval_dataset(source)]
  for images in batches[:1] + batches[-1:] + batches[:1]:  # trace every batch shape used
    predict(images).numpy()

  def run_bare():
    timed = TimedPredict(predict)
    logits = [timed(images).numpy() for images in batches]
    timed.mark_end()
    return timed, np.concatenate(logits)

  def run_label(r):
    out = os.path.join(tmp, f'label{px}-{r}')
    timed = TimedPredict(predict)
    with preloaded(model, timed):
      wall, cpu = cpu_seconds(lambda: label.label(
          label.LabelConfig(model_dir=teacher, unlabeled=spec, output_dir=out,
                            batch_size=args.batch_size, progress='none')))
    probabilities = read_probabilities(out)
    shutil.rmtree(out)
    return timed, wall, cpu, probabilities

  sides = {'ns-label': [], 'bare': []}
  calls = {}
  difference = 0.0
  for r in range(args.repeats):
    timed, wall, cpu, probabilities = run_label(r)
    images, w_wall, w_cpu = timed.window(args.warmup_batches)
    sides['ns-label'].append({'images': images, 'seconds': w_wall, 'cpu_seconds': w_cpu,
                              'call_seconds': wall, 'call_cpu_seconds': cpu})
    calls['ns-label'] = len(timed.calls)
    timed, logits = run_bare()
    images, w_wall, w_cpu = timed.window(args.warmup_batches)
    sides['bare'].append({'images': images, 'seconds': w_wall, 'cpu_seconds': w_cpu})
    calls['bare'] = len(timed.calls)
    # oneDNN's sums are not bitwise reproducible from run to run, hence a tolerance.
    if probabilities.shape != (num, logits.shape[1]):
      raise RuntimeError(f'{px} px: ns-label wrote {probabilities.shape} probabilities for {num} '
                         'images')
    difference = max(difference, float(np.abs(probabilities - softmax(logits)).max()))
    if difference > 1e-4:
      raise RuntimeError(f'{px} px: ns-label\'s probabilities differ from the bare pass\'s by '
                         f'{difference:.2g}: not the same images in the same order')
    print(f'  {px} px run {r + 1}: ns-label {sides["ns-label"][-1]["seconds"]:.2f} s '
          f'({sides["ns-label"][-1]["cpu_seconds"]:.2f} CPU s), bare {w_wall:.2f} s '
          f'({w_cpu:.2f} CPU s) over {images} images', file=sys.stderr, flush=True)
  if calls['ns-label'] != calls['bare']:
    raise RuntimeError(f'{px} px: {calls} predict calls: the sides saw different batches')
  stages = measure_stages(source, eval_dataset, predict, batches, logits, config, dir_config,
                          tmp, args)
  return {'px': px, 'model': overrides, 'images': num, 'batch_size': args.batch_size,
          'warmup_batches': args.warmup_batches,
          'batches': calls['bare'], 'measured_images': images, 'runs': sides,
          'best': {name: best(runs) for name, runs in sides.items()},
          'paired_ratios': paired_ratios(sides), 'stages_us': stages,
          'largest_probability_difference': difference}


def paired_ratios(sides):
  """Each repeat's ns-label img/s over the bare pass's run right after it, sorted: on a machine
  whose speed drifts by 10% from one run to the next, their median says more than the ratio of
  the two best runs."""
  return sorted((lab['images'] / lab['seconds']) / (bare['images'] / bare['seconds'])
                for lab, bare in zip(sides['ns-label'], sides['bare']))


def best(runs):
  """The best run's figures (fastest window; CPU seconds: the least of the runs)."""
  fastest = min(runs, key=lambda r: r['seconds'])
  out = {'img_per_s': fastest['images'] / fastest['seconds'],
         'img_per_cpu_s': max(r['images'] / r['cpu_seconds'] for r in runs)}
  if 'call_seconds' in fastest:
    out['call_seconds'] = min(r['call_seconds'] for r in runs)
  return out


def measure_stages(source, eval_dataset, predict, batches, logits, config, dir_config, tmp,
                   args):
  """CPU microseconds per image of each stage alone: every stage's dataset or loop is built once,
  run once untimed (tracing, graph rewrites), then args.repeats times; the least CPU time."""
  num = source.num_examples
  b = args.batch_size
  in_memory = dataclasses.replace(source, dataset=source.dataset.cache())
  drain(in_memory.dataset)
  encoded, ids = zip(*[(d['encoded'].numpy(), d['source_id'].numpy())
                       for d in eval_dataset(source)])
  teacher_name = label.teacher_name_of(config, dir_config)
  serialized = []
  # A pixel of each image: the decode cannot be pruned and nothing big is copied.
  decoded = in_memory.dataset.batch(b).map(lambda d: tf.map_fn(
      lambda e: preprocessing.decode(e, None)[0, 0], d['encoded'],
      fn_output_signature=tf.TensorSpec([3], tf.uint8)))
  read = sources.read_chunks(source, pipeline.eval_chunk_size(b, dir_config.model.resolution))
  prepared = eval_dataset(source)

  def serialise():
    serialized.clear()
    start = 0
    for enc, sid in zip(encoded, ids):
      records, _, _ = label.pseudo_records(logits[start:start + len(enc)], enc, sid, config,
                                           teacher_name)
      serialized.extend(records)
      start += len(enc)

  def write():
    path = os.path.join(tmp, 'write.tfrecord')
    with tf.io.TFRecordWriter(path) as writer:
      for record in serialized:
        writer.write(record)
    os.remove(path)

  def forward():
    for images in batches:
      predict(images).numpy()

  timings = {'read': lambda: drain(read), 'decode': lambda: drain(decoded),
             'read+decode+preprocess': lambda: drain(prepared), 'model': forward,
             'serialise': serialise, 'write': write}
  cpu = {name: [] for name in timings}
  for r in range(args.repeats + 1):
    for name, fn in timings.items():
      seconds = cpu_seconds(fn)[1]
      if r:
        cpu[name].append(seconds)
  us = {name: min(v) / num * 1e6 for name, v in cpu.items()}
  us['preprocess'] = us.pop('read+decode+preprocess') - us['decode'] - us['read']
  return {name: us[name] for name in STAGES}


def markdown(results, cores, load):
  """The two tables (sides, stages) as markdown."""
  lines = [
      f'ns-label vs a bare forward pass of the same model on {cores} CPU cores (load average '
      f'at start {load:.1f}); loading and tracing excluded from both, the first '
      f"{results[0]['warmup_batches']} batch(es) of each run excluded; best of "
      f"{len(results[0]['runs']['bare'])} alternating runs (ratio: of the two best runs; paired "
      'ratio: of each ns-label run to the bare run after it).  img/CPU-s: images per CPU-second '
      'of the process (all its threads).', '',
      '| px | model | images | batch | ns-label img/s | bare img/s | ratio | '
      'paired ratio, median (range) | ns-label img/CPU-s | bare img/CPU-s | CPU ratio | '
      'whole label() call s |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    lab, bare = r['best']['ns-label'], r['best']['bare']
    paired = r['paired_ratios']
    m = r['model']
    name = 'B0' + (f" w{m['width']}/d{m['depth']} small-image" if m.get('small_image') else '')
    lines.append(
        f"| {r['px']} | {name}, {m['num_classes']} classes | {r['images']} | {r['batch_size']} | "
        f"{lab['img_per_s']:.1f} | {bare['img_per_s']:.1f} | "
        f"**{lab['img_per_s'] / bare['img_per_s']:.2f}x** | {statistics.median(paired):.2f}x "
        f"({paired[0]:.2f}-{paired[-1]:.2f}) | {lab['img_per_cpu_s']:.1f} | "
        f"{bare['img_per_cpu_s']:.1f} | {lab['img_per_cpu_s'] / bare['img_per_cpu_s']:.2f}x | "
        f"{lab['call_seconds']:.1f} |")
  lines += ['', 'Where the time goes: CPU microseconds per image of each stage alone (share of '
            'the sum); measured: ns-label\'s CPU per image in the window.', '',
            '| px | ' + ' | '.join(STAGES) + ' | sum | ns-label measured |',
            '|---|' + '---|' * (len(STAGES) + 2)]
  for r in results:
    s = r['stages_us']
    total = sum(s.values())
    measured = 1e6 / r['best']['ns-label']['img_per_cpu_s']
    lines.append(f"| {r['px']} | " + ' | '.join(
        f'{s[k]:.0f} ({100 * s[k] / total:.0f}%)' for k in STAGES) +
        f' | {total:.0f} | {measured:.0f} |')
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='224,32', help='Comma-separated sizes: 224 and/or 32.')
  parser.add_argument('--images_224', type=int, default=1280, help='Images at 224 px.')
  parser.add_argument('--images_32', type=int, default=16000,
                      help='Images at 32 px (16,000: a window of ~8 s on 2 cores; in one of ~2 s '
                      'the run-ahead of the input pipeline and the end of the shard weigh more).')
  parser.add_argument('--batch_size', type=int, default=label.LabelConfig.batch_size,
                      help="Images per batch, both sides (default: ns-label's).")
  parser.add_argument('--warmup_batches', type=int, default=1, help='Untimed first batches.')
  parser.add_argument('--repeats', type=int, default=5, help='Runs of each side, alternating.')
  parser.add_argument('--cifar10_tar', default=str(CIFAR10_TAR), help='cifar10-jpeg.tar.gz.')
  parser.add_argument('--output_dir', default=None, help='Where label_throughput.{json,md} go.')
  args = parser.parse_args()
  sizes = [int(s) for s in args.sizes.split(',')]
  cores, load = os.cpu_count(), os.getloadavg()[0]
  tmp = tempfile.mkdtemp(prefix='ns-label-bench-')
  try:
    counts = {224: args.images_224, 32: args.images_32}
    most = max(counts[px] for px in sizes)
    input_pipeline.extract_images(args.cifar10_tar, most, os.path.join(tmp, 'small'),
                                  os.path.join(tmp, 'large'), 256)
    results = []
    for px in sizes:
      folder = os.path.join(tmp, MODELS[px][1])
      keep_first(folder, counts[px] // 10)
      results.append(run_size(px, folder, tmp, args))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  table = markdown(results, cores, load)
  print(table)
  if args.output_dir:
    model_dir_lib.atomic_write_text(
        os.path.join(args.output_dir, 'label_throughput.json'),
        json.dumps({'cores': cores, 'load_average': load, 'end_load_average': os.getloadavg()[0],
                    'goal': GOAL, 'results': results}, indent=2))
    model_dir_lib.atomic_write_text(os.path.join(args.output_dir, 'label_throughput.md'), table)


if __name__ == '__main__':
  main()
