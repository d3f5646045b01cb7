"""Training throughput (images/second) of one step: this project's EfficientNet-B0 against
keras.applications.EfficientNetB0, same batch, precision and optimizer, in one run, with the ratio.

  python benchmarks/train_step.py                       # B0 at 224 px and small-image B0 at 32 px
  python benchmarks/train_step.py --precision=mixed_bfloat16 --batch_224=16 --steps=5

Both models run the same step, timed in alternation (best of --rounds): forward in training mode, softmax cross-entropy, gradients, RMSProp
update, inside one tf.function over in-memory random images (no input pipeline).  The 32 px row
compares our small-image B0 (stride 1 in stages 2-3) with keras' B0 at 32 px (it has no such mode,
so it does 16x less work per image: the ratio there is informative only).  A last row times ns-train's
full step (weight decay, EMA of weights and batch-norm statistics, metrics) on the same model, to
show the loop's own cost.  Writes OUT/train_step.json and .md.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras
import numpy as np
import tensorflow as tf

from noisy_student_tf import models
from noisy_student_tf.train import trainer


def _plain_step(model, optimizer):
  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = tf.cast(model(images, training=True), tf.float32)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return loss
  return step


def time_fn(fn, steps, warmup, batch):
  """Runs fn() `warmup` times, then `steps` times; returns images/second of the timed part."""
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return steps * batch / (time.perf_counter() - start)


def make_bench(model, batch, resolution):
  """Returns a no-argument function running one plain training step of `model` on random
  [batch, R, R, 3] images (RMSProp, softmax cross-entropy)."""
  optimizer = keras.optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3)
  step = _plain_step(model, optimizer)
  images = tf.random.uniform([batch, resolution, resolution, 3])
  labels = tf.random.uniform([batch], 0, model.output_shape[-1], tf.int64)
  return lambda: step(images, labels).numpy()


def compare(fns, steps, warmup, batch, rounds):
  """Times the functions in alternation for `rounds` rounds (so that load from other processes
  hits both alike); returns the best images/second of each."""
  for fn in fns:
    time_fn(fn, 0, warmup, batch)
  best = [0.0] * len(fns)
  for _ in range(rounds):
    for i, fn in enumerate(fns):
      best[i] = max(best[i], time_fn(fn, steps, 0, batch))
  return best


def bench_trainer_step(batch, resolution, small_image, steps, warmup, precision):
  """images/second of ns-train's own step (trainer._Run) on random images, default strategy."""
  config = trainer.TrainConfig(model_dir='/unused', labeled='unused', model='b0',
                               resolution=resolution, small_image=small_image, batch_size=batch,
                               train_steps=steps + warmup, precision=precision, warmup_epochs=0)
  data = trainer._Data(None, None, None, 1000, None)  # only num_classes is read
  schedule = trainer.optim.LearningRate(base=0.01, total_steps=steps + warmup)
  strategy = tf.distribute.get_strategy()
  with trainer._Policy(precision):
    run = trainer._Run(config, data, strategy, steps + warmup, schedule)
  images = tf.random.uniform([batch, resolution, resolution, 3])
  targets = tf.one_hot(tf.random.uniform([batch], 0, 1000, tf.int32), 1000)
  weights = tf.fill([batch], 1.0 / batch)
  ds = tf.data.Dataset.from_tensors((images, targets, weights)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(ds))
  chunk = run.train_chunk_fn()
  return time_fn(lambda: chunk(iterator, tf.constant(1))['loss'].numpy(), steps, warmup, batch)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--precision', default='float32',
                      choices=['float32', 'mixed_bfloat16', 'mixed_float16'], help='dtype policy')
  parser.add_argument('--batch_224', type=int, default=32, help='batch at 224 px')
  parser.add_argument('--batch_32', type=int, default=128, help='batch at 32 px')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per model')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps per model')
  parser.add_argument('--rounds', type=int, default=2, help='alternating timing rounds (best kept)')
  parser.add_argument('--out', default='/tmp/train_step', help='output folder')
  args = parser.parse_args()
  keras.config.set_dtype_policy(args.precision)
  rows = []
  for resolution, batch, small in ((224, args.batch_224, False), (32, args.batch_32, True)):
    keras.utils.set_random_seed(0)
    ours = models.build_model('b0', 1000, resolution=resolution, small_image=small)
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=(resolution, resolution, 3))
    ours_ips, theirs_ips = compare([make_bench(ours, batch, resolution),
                                    make_bench(theirs, batch, resolution)],
                                   args.steps, args.warmup, batch, args.rounds)
    rows.append({'model': f'B0 {resolution} px{" small-image" if small else ""}', 'batch': batch,
                 'ours_img_s': ours_ips, 'keras_img_s': theirs_ips, 'ratio': ours_ips / theirs_ips})
    print(rows[-1], flush=True)
  full = bench_trainer_step(args.batch_32, 32, True, args.steps, args.warmup, args.precision)
  rows.append({'model': 'B0 32 px small-image, ns-train step (EMA, WD, metrics)',
               'batch': args.batch_32, 'ours_img_s': full, 'keras_img_s': rows[-1]['ours_img_s'],
               'ratio': full / rows[-1]['ours_img_s']})
  lines = [f'precision {args.precision}, {os.cpu_count()} CPUs, best of {args.rounds} alternating '
           f'rounds of {args.steps} timed steps',
           '', '| model | batch | ours img/s | peer img/s | ratio |', '|---|---|---|---|---|']
  lines += [f'| {r["model"]} | {r["batch"]} | {r["ours_img_s"]:.1f} | {r["keras_img_s"]:.1f} | '
            f'{r["ratio"]:.2f} |' for r in rows]
  lines.append('\npeer: keras.applications.EfficientNetB0 (last row: our plain step of the same model)')
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / 'train_step.json').write_text(json.dumps({'precision': args.precision, 'rows': rows}, indent=2))
  (out / 'train_step.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
