#!/usr/bin/env python
"""Checks an ns-export SavedModel the way TF Serving uses it, in a process that knows nothing of
noisy_student_tf (only tensorflow, numpy and tensorflow-serving-api are imported).

  python tools/serving_check.py EXPORT_DIR[/VERSION] [--images 'test/*/*.jpg'] [--json_out F]

1. loads the SavedModel with tf.saved_model.load (EXPORT_DIR alone: its highest version);
2. calls every signature by name with keyword inputs (what TF Serving's Predict API does), on
   synthetic inputs (or --images for string inputs), batch 1 and 32, and times it;
3. parses assets.extra/tf_serving_warmup_requests as PredictionLog records and replays them;
4. sends bad input (an empty string, bytes that are not an image, a truncated JPEG in a batch;
   pixels outside 0-255 and NaN for float inputs) and expects InvalidArgument each time, then a
   good request again (the model still answers);
5. prints a table: signature, input, latency per image at each batch size, output shapes.
With --images, also records the top-k of every image (JSON) for comparison with ns-eval.
Exits 1 when any check fails.
"""

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

WARMUP = os.path.join('assets.extra', 'tf_serving_warmup_requests')


def resolve_version_dir(path):
  """EXPORT_DIR/<version> as given, or the highest integer version inside EXPORT_DIR."""
  if os.path.exists(os.path.join(path, 'saved_model.pb')):
    return path
  versions = sorted(int(v) for v in os.listdir(path) if v.isdigit())
  if not versions:
    sys.exit(f'{path} holds neither saved_model.pb nor integer version folders')
  return os.path.join(path, str(versions[-1]))


def input_specs(fn):
  """{name: TensorSpec} of a signature's keyword inputs."""
  return dict(fn.structured_input_signature[1])


def synthetic_jpegs(resolution, n=4, seed=0):
  """n random smooth RGB JPEG images of side `resolution`."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    small = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
    image = tf.image.resize(small, (resolution, resolution), method='bicubic')
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    out.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return out


def make_batch(spec, n, jpegs, rng):
  """A batch of n valid inputs for one input spec (strings: cycled JPEGs; floats: 0-255)."""
  if spec.dtype == tf.string:
    return tf.constant([jpegs[i % len(jpegs)] for i in range(n)])
  shape = [n] + [d for d in spec.shape[1:]]
  return tf.constant(rng.uniform(0, 255, size=shape).astype(spec.dtype.as_numpy_dtype))


def time_call(fn, inputs, repeats):
  """Times `repeats` calls after one untimed call; returns (median s, min s, outputs)."""
  outputs = fn(**inputs)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    outputs = fn(**inputs)
    _ = {k: v.numpy() for k, v in outputs.items()}
    times.append(time.perf_counter() - start)
  return float(np.median(times)), float(np.min(times)), outputs


def short_error(e):
  """The informative line of a TF error message: the assertion text or the failing op's message,
  without the 'Graph execution error' / 'Detected at node' / '[[node ...]]' framing."""
  framing = ('Graph execution error', 'Detected at node', '<stack traces', '[[')
  lines = [l.strip() for l in str(e.message).splitlines() if l.strip()]
  useful = [l for l in lines if not l.startswith(framing)]
  return (useful or lines or [str(e)])[0][:300]


def bad_cases(spec, good):
  """(case name, bad batch) pairs for one input spec; `good` is a valid one-element batch."""
  if spec.dtype == tf.string:
    jpeg = good.numpy()[0]
    return [('empty string', tf.constant([jpeg, b''])),
            ('not an image', tf.constant([jpeg, b'this is plain text, not an image'])),
            ('truncated JPEG', tf.constant([jpeg, jpeg[:len(jpeg) // 2]]))]
  x = good.numpy()
  return [('pixel > 255', tf.constant(np.concatenate([x, x + 300.0]))),
          ('pixel < 0 (already normalised)', tf.constant(np.concatenate([x, x / 127.5 - 1.0]))),
          ('NaN', tf.constant(np.concatenate([x, np.full_like(x, np.nan)])))]


def check_bad_inputs(name, fn, spec_name, spec, good):
  """Runs each bad case; returns a list of result dicts (ok when InvalidArgument was raised)."""
  results = []
  for case, batch in bad_cases(spec, good):
    try:
      fn(**{spec_name: batch})
      results.append({'signature': name, 'case': case, 'ok': False, 'error': None,
                      'message': 'no error raised'})
    except tf.errors.InvalidArgumentError as e:
      results.append({'signature': name, 'case': case, 'ok': True, 'error': 'InvalidArgument',
                      'message': short_error(e)})
    except Exception as e:  # pylint: disable=broad-except
      results.append({'signature': name, 'case': case, 'ok': False, 'error': type(e).__name__,
                      'message': str(e)[:300]})
  fn(**{spec_name: good})  # still answers after the errors
  return results


def replay_warmup(loaded, path):
  """Parses the warm-up file as PredictionLog records and runs each request; returns dicts."""
  from tensorflow_serving.apis import prediction_log_pb2
  results = []
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    name = request.model_spec.signature_name or 'serving_default'
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = loaded.signatures[name](**inputs)
    results.append({'model': request.model_spec.name, 'signature': name,
                    'inputs': {k: list(v.shape) for k, v in inputs.items()},
                    'outputs': {k: list(v.shape) for k, v in outputs.items()}})
  return results


def predict_files(fn, spec_name, paths, batch_size=32):
  """Top-k and probabilities of each file through a string signature; {path: result}."""
  out = {}
  for i in range(0, len(paths), batch_size):
    chunk = paths[i:i + batch_size]
    batch = tf.constant([open(p, 'rb').read() for p in chunk])
    outputs = {k: v.numpy() for k, v in fn(**{spec_name: batch}).items()}
    for j, p in enumerate(chunk):
      out[p] = {'top_k_classes': outputs['top_k_classes'][j].tolist(),
                'top_k_scores': outputs['top_k_scores'][j].tolist(),
                'top_k_names': [n.decode() for n in outputs['top_k_names'][j]],
                'probabilities': outputs['probabilities'][j].tolist()}
  return out


def fmt_shape(shape, n):
  return '[' + ', '.join('N' if i == 0 and d == n else str(d) for i, d in enumerate(shape)) + ']'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('export', help='EXPORT_DIR/<version> or EXPORT_DIR (highest version)')
  parser.add_argument('--batch_sizes', default='1,32', help='comma-separated batch sizes to time')
  parser.add_argument('--repeats', type=int, default=5, help='timed calls per batch size')
  parser.add_argument('--images', default=None,
                      help='glob of encoded images to time string signatures on and to predict')
  parser.add_argument('--json_out', default=None, help='write every result to this JSON file')
  args = parser.parse_args(argv)
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]

  path = resolve_version_dir(args.export)
  start = time.perf_counter()
  loaded = tf.saved_model.load(path)
  load_seconds = time.perf_counter() - start
  rng = np.random.default_rng(0)
  files = sorted(glob.glob(args.images)) if args.images else []
  if args.images and not files:
    sys.exit(f'--images {args.images!r} matched no file')

  rows, bad, failures, predictions = [], [], [], {}
  for name in sorted(loaded.signatures):
    fn = loaded.signatures[name]
    specs = input_specs(fn)
    if len(specs) != 1:
      failures.append(f'{name}: expected one input, got {sorted(specs)}')
      continue
    (spec_name, spec), = specs.items()
    resolution = next((int(s.shape[1]) for f in loaded.signatures.values()
                       for s in input_specs(f).values() if s.shape.rank == 4), 224)
    jpegs = [open(p, 'rb').read() for p in files[:64]] or synthetic_jpegs(resolution)
    row = {'signature': name, 'input': f'{spec_name} {spec.dtype.name} {spec.shape}',
           'ms_per_image': {}, 'min_ms_per_image': {}, 'outputs': {}}
    for n in batch_sizes:
      median, fastest, outputs = time_call(fn, {spec_name: make_batch(spec, n, jpegs, rng)},
                                           args.repeats)
      row['ms_per_image'][n] = 1000 * median / n
      row['min_ms_per_image'][n] = 1000 * fastest / n
      row['outputs'] = {k: fmt_shape(list(v.shape), n) for k, v in sorted(outputs.items())}
      if any(v.shape[0] != n for v in outputs.values()):
        failures.append(f'{name}: batch {n} gave outputs {row["outputs"]}')
    rows.append(row)
    results = check_bad_inputs(name, fn, spec_name, spec, make_batch(spec, 1, jpegs, rng))
    bad.extend(results)
    failures.extend(f'{r["signature"]} / {r["case"]}: {r["message"]}' for r in results
                    if not r['ok'])
    if files and spec.dtype == tf.string:
      predictions[name] = predict_files(fn, spec_name, files)

  warmup_path = os.path.join(path, WARMUP)
  warmup = []
  if os.path.exists(warmup_path):
    warmup = replay_warmup(loaded, warmup_path)
    if not warmup:
      failures.append(f'{warmup_path} holds no records')
  else:
    failures.append(f'{warmup_path} is missing')
  imported = 'noisy_student_tf' in sys.modules
  if imported:
    failures.append('noisy_student_tf was imported: the export is not self-contained')

  print(f'\n{path}: loaded in {load_seconds:.1f} s; warm-up file: {len(warmup)} PredictionLog '
        f'records replayed ({", ".join(sorted({w["signature"] for w in warmup}))})\n')
  head = ' | '.join(f'ms/image @{n} median (min)' for n in batch_sizes)
  print(f'| signature | input | {head} | outputs |')
  print('|' + '---|' * (3 + len(batch_sizes)))
  for r in rows:
    lat = ' | '.join(f'{r["ms_per_image"][n]:.2f} ({r["min_ms_per_image"][n]:.2f})'
                     for n in batch_sizes)
    outs = ', '.join(f'{k} {v}' for k, v in r['outputs'].items())
    print(f'| {r["signature"]} | {r["input"]} | {lat} | {outs} |')
  print('\n| signature | bad input | result |\n|---|---|---|')
  for b in bad:
    print(f'| {b["signature"]} | {b["case"]} | {b["error"] or "NO ERROR"}: {b["message"]} |')
  print('\n' + ('all checks passed' if not failures else 'FAILED:\n  ' + '\n  '.join(failures)))

  if args.json_out:
    with open(args.json_out + '.tmp', 'w') as f:
      json.dump({'path': path, 'load_seconds': load_seconds, 'signatures': rows, 'bad_inputs': bad,
                 'warmup': warmup, 'predictions': predictions,
                 'imported_noisy_student_tf': imported, 'failures': failures}, f, indent=1)
    os.replace(args.json_out + '.tmp', args.json_out)
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
