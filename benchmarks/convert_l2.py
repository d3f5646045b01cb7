"""Benchmark: converting an L2-shaped official checkpoint (480M parameters) into a model dir.

Claim (issue 9): the conversion takes under 10 minutes and under 8 GB of memory on this machine.

Writes a checkpoint with the official EfficientNet-L2 names and shapes (raw values, their
ExponentialMovingAverage shadows and global_step; 2 x 480M float32 = 3.8 GB) under --tmp_dir,
converts it in a fresh process, and reports wall time and that process's peak resident memory
(ru_maxrss) against the limits.  Each stage runs in its own process so that the peak belongs to
the conversion alone.  Everything written under --tmp_dir is removed at the end.

  python benchmarks/convert_l2.py [--tmp_dir=/tmp] [--output=convert_l2.json] [--model=l2]
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags

flags.DEFINE_string('tmp_dir', '/tmp', 'Where the checkpoint and the model dir are written '
                    '(needs about 8 GB free); removed afterwards.')
flags.DEFINE_string('model', 'efficientnet-l2', 'Variant whose official layout is written '
                    '(efficientnet-b0 for a quick try).')
flags.DEFINE_string('output', None, 'Optional JSON file for the results.')
flags.DEFINE_float('time_limit_s', 600.0, 'The claimed bound on the conversion time.')
flags.DEFINE_float('memory_limit_gb', 8.0, 'The claimed bound on the conversion peak memory.')
flags.DEFINE_enum('stage', 'all', ['all', 'generate', 'convert'], 'Internal: one stage in a '
                  'child process.')
flags.DEFINE_string('prefix', None, 'Internal: checkpoint prefix for the generate/convert stages.')
flags.DEFINE_string('model_dir', None, 'Internal: model dir for the convert stage.')
FLAGS = flags.FLAGS


def _peak_rss_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def generate(prefix, model):
  """Writes the official layout of `model` with random raw values and differing shadows."""
  import numpy as np
  from noisy_student_tf import convert, models
  layout = convert.official_layout(models.make_config(model))
  rng = np.random.default_rng(0)

  def items():
    for suffix, scale in (('', 1.0), (convert.EMA_SUFFIX, 1.001)):
      for w in layout:
        value = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(0.05 * scale)
        if w.official_name.endswith('moving_variance'):
          value = np.abs(value) + np.float32(0.5)
        yield w.official_name + suffix, value
    yield 'global_step', np.int64(1)

  start = time.time()
  out = convert.write_checkpoint(prefix, items())
  return {'generate_seconds': time.time() - start, 'checkpoint_bytes': out['bytes'],
          'checkpoint_tensors': out['num_tensors']}


def convert_stage(prefix, model_dir):
  """Converts `prefix` into `model_dir`; returns time, peak memory and the report's figures."""
  from noisy_student_tf import convert
  start = time.time()
  report = convert.convert_checkpoint(prefix, model_dir)
  seconds = time.time() - start
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(model_dir) for f in fs)
  return {'convert_seconds': seconds, 'convert_peak_rss_gb': _peak_rss_gb(),
          'model': report.model, 'num_parameters': report.num_parameters,
          'num_weights': report.num_weights, 'weights_source': report.weights_source,
          'model_dir_bytes': size}


def _child(stage, **kw):
  args = [sys.executable, os.path.abspath(__file__), f'--stage={stage}', f'--model={FLAGS.model}']
  args += [f'--{k}={v}' for k, v in kw.items()]
  proc = subprocess.run(args, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f'{stage} stage failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.stage == 'generate':
    print(json.dumps(generate(FLAGS.prefix, FLAGS.model)))
    return
  if FLAGS.stage == 'convert':
    print(json.dumps(convert_stage(FLAGS.prefix, FLAGS.model_dir)))
    return
  work = tempfile.mkdtemp(dir=FLAGS.tmp_dir, prefix='convert_l2-')
  try:
    prefix = os.path.join(work, f'noisy_student_{FLAGS.model}', 'model.ckpt')
    result = {'model_layout': FLAGS.model}
    result.update(_child('generate', prefix=prefix))
    print(f'generated {result["checkpoint_tensors"]} tensors, '
          f'{result["checkpoint_bytes"] / 1e9:.2f} GB in {result["generate_seconds"]:.0f} s',
          flush=True)
    result.update(_child('convert', prefix=prefix, model_dir=os.path.join(work, 'model_dir')))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  result['time_limit_s'] = FLAGS.time_limit_s
  result['memory_limit_gb'] = FLAGS.memory_limit_gb
  result['within_limits'] = (result['convert_seconds'] < FLAGS.time_limit_s and
                             result['convert_peak_rss_gb'] < FLAGS.memory_limit_gb)
  result['cpu_count'] = os.cpu_count()
  print('| model | parameters | checkpoint | convert time | limit | peak memory | limit |')
  print('|---|---|---|---|---|---|---|')
  print(f'| {result["model"]} | {result["num_parameters"] / 1e6:.1f}M | '
        f'{result["checkpoint_bytes"] / 1e9:.2f} GB | {result["convert_seconds"]:.0f} s | '
        f'{FLAGS.time_limit_s:.0f} s ({result["convert_seconds"] / FLAGS.time_limit_s:.2f}x) | '
        f'{result["convert_peak_rss_gb"]:.2f} GB | {FLAGS.memory_limit_gb:.0f} GB '
        f'({result["convert_peak_rss_gb"] / FLAGS.memory_limit_gb:.2f}x) |')
  print(json.dumps(result, indent=2, sort_keys=True))
  if FLAGS.output:
    from noisy_student_tf import model_dir
    model_dir.atomic_write_text(FLAGS.output, json.dumps(result, indent=2, sort_keys=True))
  if not result['within_limits']:
    sys.exit('conversion exceeded the claimed limits')


if __name__ == '__main__':
  app.run(main)
