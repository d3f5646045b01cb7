"""ns-label's throughput on Apache Beam against the shard labeler, on the same images.

Labels the same real CIFAR-10 JPEGs (a folder: source extracted from ../shared/data) with the
same teacher (an untrained small-image EfficientNet-B0 at width/depth 0.5, 32 px: the model of
flags/cifar10_4000.cfg) at the same batch size, each run in its own process:
  shard  ns-label --runner=local (one process, shard by shard: today's code);
  beam   ns-label --runner=beam on the DirectRunner in multi-processing mode with 2 workers.
Times the whole labeling call (model loading and Beam's start-up included: the engine's overhead
is what is measured) in wall-clock seconds and in CPU seconds of the run's processes (its Beam
workers included), checks that both wrote the same number of records, and prints a table of
images per second of each and the ratios beam / shard.  Goal: wall-clock ratio >= 0.8.  On a
machine shared with other work the CPU figures say more about the engine's overhead than the
wall-clock ones.

  python benchmarks/beam_label_throughput.py [--num_images=5000] [--batch_size=256] [--repeats=1] [--output_dir=DIR]
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_TAR = pathlib.Path(os.environ.get(
    'NS_CIFAR10_TAR', REPO.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'))
TWO_PROCESSES = ('--runner=DirectRunner --direct_num_workers=2 '
                 '--direct_running_mode=multi_processing')

# Runs in a fresh process: one labeling, timed; prints one JSON line.
_CHILD = r'''
import json, sys, time
from noisy_student_tf.selftrain import label
config = label.LabelConfig(**json.loads(sys.argv[1]))
start = time.time()
stats = label.label(config)
print('@@RESULT@@' + json.dumps({'seconds': time.time() - start, 'count': stats['count']}))
'''


def extract_images(out, num_images):
  """Extracts the first num_images / 10 training JPEGs of each CIFAR-10 class into out/<class>/."""
  per_class = num_images // 10
  taken = {}
  with tarfile.open(CIFAR10_TAR) as tar:
    for member in tar:
      parts = pathlib.PurePosixPath(member.name).parts
      if not member.isfile() or len(parts) < 3 or parts[-3] != 'train':
        continue
      if taken.get(parts[-2], 0) < per_class:
        taken[parts[-2]] = taken.get(parts[-2], 0) + 1
        member.name = '/'.join(parts[-2:])
        tar.extract(member, out, filter='data')
  return sum(taken.values())


def make_teacher(path):
  """Writes an untrained (seeded) small-image B0 at width/depth 0.5, 32 px, as a model dir."""
  script = f'''
import keras
from noisy_student_tf import model_dir, models
keras.utils.set_random_seed(0)
config = models.make_config('b0', 10, width=0.5, depth=0.5, resolution=32, small_image=True)
model = models.build_from_config(config)
model_dir.write_config({str(path)!r}, model_dir.ModelDirConfig(
    model=config, class_names=[str(i) for i in range(10)]))
model_dir.save_weights({str(path)!r}, model, 'ema')
'''
  subprocess.run([sys.executable, '-c', script], check=True, capture_output=True)


def _children_cpu():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_once(settings):
  """Labels in a fresh process with LabelConfig(**settings); returns {'seconds' (of the labeling
  call), 'count', 'cpu_seconds' (of the process and its children, start-up included)}."""
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  cpu = _children_cpu()
  done = subprocess.run([sys.executable, '-c', _CHILD, json.dumps(settings)], env=env,
                        capture_output=True, text=True)
  cpu = _children_cpu() - cpu
  lines = [l for l in done.stdout.splitlines() if l.startswith('@@RESULT@@')]
  if done.returncode or not lines:
    raise RuntimeError(f'labeling failed:\n{done.stderr[-3000:]}')
  return {**json.loads(lines[0][len('@@RESULT@@'):]), 'cpu_seconds': cpu}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_images', type=int, default=5000, help='Images to label (10 classes).')
  parser.add_argument('--batch_size', type=int, default=256, help='Images per inference batch.')
  parser.add_argument('--num_shards', type=int, default=4, help='Output shards of both runs.')
  parser.add_argument('--repeats', type=int, default=1, help='Runs of each, alternating.')
  parser.add_argument('--beam_options', default=TWO_PROCESSES, help='The Beam run\'s options.')
  parser.add_argument('--output_dir', default=None,
                      help='Also write beam_label_throughput.{json,md} here.')
  args = parser.parse_args()
  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    num = extract_images(tmp / 'images', args.num_images)
    make_teacher(tmp / 'teacher')
    rows = {'shard': [], 'beam': []}
    for r in range(args.repeats):
      for name in rows:
        settings = dict(model_dir=str(tmp / 'teacher'), unlabeled=f'folder:{tmp / "images"}',
                        output_dir=str(tmp / f'{name}{r}'), num_shards=args.num_shards,
                        batch_size=args.batch_size, progress='none')
        if name == 'beam':
          settings.update(runner='beam', beam_options=args.beam_options)
        result = run_once(settings)
        if result['count'] != num:
          raise RuntimeError(f'{name} labeled {result["count"]} of {num} images')
        rows[name].append((result['seconds'], result['cpu_seconds']))
        print(f'  {name} run {r + 1}: {result["seconds"]:.1f} s, {result["cpu_seconds"]:.1f} CPU s',
              file=sys.stderr)
  best = {name: min(t[0] for t in times) for name, times in rows.items()}
  cpu = {name: min(t[1] for t in times) for name, times in rows.items()}
  lines = [f'ns-label throughput, {num} CIFAR-10 JPEGs, B0 w/d 0.5 at 32 px, batch '
           f'{args.batch_size}, {os.cpu_count()} CPUs (best of {args.repeats}); load average '
           f'before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}', '',
           '| labeler | seconds | images/s | ratio | CPU seconds | images/CPU-s | ratio |',
           '|---|---|---|---|---|---|---|']
  for name, label in (('shard', 'shard labeler (--runner=local)'),
                      ('beam', 'Beam DirectRunner, multi_processing, 2 workers')):
    lines.append(f'| {label} | {best[name]:.1f} | {num / best[name]:.0f} | '
                 f'{best["shard"] / best[name]:.2f}x | {cpu[name]:.1f} | {num / cpu[name]:.0f} | '
                 f'{cpu["shard"] / cpu[name]:.2f}x |')
  print('\n'.join(lines))
  if args.output_dir:
    os.makedirs(args.output_dir, exist_ok=True)
    result = {'num_images': num, 'batch_size': args.batch_size, 'repeats': args.repeats,
              'cpus': os.cpu_count(), 'beam_options': args.beam_options,
              'load_average_before': load_before, 'load_average_after': os.getloadavg()[0],
              'runs': {n: [{'seconds': t, 'cpu_seconds': c} for t, c in v]
                       for n, v in rows.items()},
              'wall_ratio': best['shard'] / best['beam'], 'cpu_ratio': cpu['shard'] / cpu['beam']}
    for name, text in (('beam_label_throughput.json', json.dumps(result, indent=1)),
                       ('beam_label_throughput.md', '\n'.join(lines) + '\n')):
      path = os.path.join(args.output_dir, name)
      with open(path + '.tmp', 'w') as f:
        f.write(text)
      os.replace(path + '.tmp', path)

if __name__ == '__main__':
  main()
