"""Training and inference throughput (images/second) of this project's EfficientNet against the
implementations a user would otherwise pick: keras.applications.EfficientNetB* on the same Keras
backend, and timm's efficientnet_b* in PyTorch, eager and under torch.compile.

Meant for a GPU machine with keras, JAX, PyTorch and timm but no TensorFlow:

  KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --models=b0 --output_dir=/tmp/gpu_b0

and, with tiny sizes, on a CPU (the test does this; KERAS_BACKEND=tensorflow works too):

  KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --tiny --impls=ours,keras_apps

What a row measures (see benchmarks/NOTES.md for the why):
- train: one optimizer step (SGD, momentum 0.9) on a batch of random normalised images and labels
  resident on the device, softmax cross-entropy on float32 logits, dropout and stochastic depth on.
  Keras rows under JAX are one jitted function built from the stateless API (model.stateless_call +
  jax.value_and_grad + optimizer.stateless_apply) with the state buffers donated; under
  TensorFlow (CPU smoke runs only) a tf.function with GradientTape.  timm rows: channels_last,
  bfloat16 autocast, the model eager or torch.compile'd.
- infer: the forward pass in inference mode on a bigger batch.
- images/s is the median over `--windows` timed windows of `--window_steps` steps each, after
  `--warmup_steps` untimed steps (compilation included there); peak memory is the device allocator's
  peak for the row (host max RSS when the device reports none, e.g. on a CPU).
Each row runs in its own subprocess (`--one_process_per_row`), so JAX and PyTorch never share a
process and each peak-memory figure belongs to one row.  Rows whose framework is not installed are
reported as skipped.  Writes gpu_throughput.json and gpu_throughput.md to --output_dir and prints the
markdown table; exits non-zero when a row failed.
"""

import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

IMPLS = ('ours', 'keras_apps', 'timm_eager', 'timm_compile')
MODES = ('train', 'infer')
KERAS_IMPLS = ('ours', 'keras_apps')
# The classifier dropout of each variant (EfficientNet's table; ours and keras.applications use it
# by default, timm is told it so that all three train the same network).
DROPOUT = {'b0': 0.2, 'b1': 0.2, 'b2': 0.3, 'b3': 0.3, 'b4': 0.4, 'b5': 0.4, 'b6': 0.5, 'b7': 0.5}
DROP_PATH_RATE = 0.2
TINY = dict(train_batch=4, infer_batch=4, resolution=32, warmup_steps=1, window_steps=2, windows=2,
            width=0.25, depth=0.25)
ROW_TAG = 'GPU_THROUGHPUT_ROW '

flags.DEFINE_list('models', ['b0', 'b3'], f'EfficientNet variants to measure, of {sorted(DROPOUT)}.')
flags.DEFINE_list('impls', list(IMPLS), f'Implementations to measure, of {list(IMPLS)}.')
flags.DEFINE_list('modes', list(MODES), f'What to measure, of {list(MODES)}.')
flags.DEFINE_integer('train_batch', 256, 'Batch size of the training rows.')
flags.DEFINE_integer('infer_batch', 512, 'Batch size of the inference rows.')
flags.DEFINE_integer('resolution', 224, 'Input side in pixels, for every variant.')
flags.DEFINE_integer('num_classes', 1000, 'Classifier width.')
flags.DEFINE_float('width', 0, 'Width multiplier for every variant (0: the variant\'s own); the '
                   'Keras rows only (timm builds the named variant).')
flags.DEFINE_float('depth', 0, 'Depth multiplier for every variant (0: the variant\'s own); the '
                   'Keras rows only.')
flags.DEFINE_enum('precision', 'mixed_bfloat16', ['mixed_bfloat16', 'float32'],
                  'Keras dtype policy; timm rows use bfloat16 autocast for mixed_bfloat16.')
flags.DEFINE_integer('warmup_steps', 5, 'Untimed steps before the windows (compilation included).')
flags.DEFINE_integer('window_steps', 20, 'Steps per timed window.')
flags.DEFINE_integer('windows', 5, 'Timed windows; the median is reported.')
flags.DEFINE_bool('tiny', False, 'CPU smoke sizes: ' + ', '.join(f'{k}={v}' for k, v in TINY.items())
                  + ' (flags given explicitly still win).')
flags.DEFINE_bool('one_process_per_row', True,
                  'Run every row in its own subprocess (exact per-row peak memory); false runs all '
                  'rows of one implementation and variant in one subprocess (faster start-up).')
flags.DEFINE_integer('jobs', 1, 'Subprocesses run at once. Keep 1 for real measurements; more only '
                     'shortens CPU smoke runs (rows then share the cores).')
flags.DEFINE_string('torch_compile_mode', 'default', 'torch.compile mode of the timm_compile rows.')
flags.DEFINE_bool('tf_jit_compile', False,
                  'Under KERAS_BACKEND=tensorflow, compile the steps with XLA (jit_compile=True).')
flags.DEFINE_integer('child_timeout_s', 1200, 'Seconds one subprocess may run before it is killed.')
flags.DEFINE_string('output_dir', '', 'Where to write gpu_throughput.{json,md}; empty: print only.')
flags.DEFINE_list('child_rows', [], 'Internal: IMPL:MODEL:MODE rows this process measures itself.')
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Settings:
  """The sizes and knobs every row of one run shares."""
  train_batch: int
  infer_batch: int
  resolution: int
  num_classes: int
  width: float
  depth: float
  precision: str
  warmup_steps: int
  window_steps: int
  windows: int
  torch_compile_mode: str
  tf_jit_compile: bool

  def batch(self, mode):
    """Returns the batch size of `mode` ('train' or 'infer')."""
    return self.train_batch if mode == 'train' else self.infer_batch

  def as_args(self):
    """Returns the command-line flags that recreate these settings in a subprocess."""
    return [f'--{k}={str(v).lower() if isinstance(v, bool) else v}'
            for k, v in dataclasses.asdict(self).items()]


def settings_from_flags():
  """Returns Settings from FLAGS (tiny sizes where --tiny and the flag was not given).

  Raises ValueError naming a bad model, implementation, mode or size.
  """
  values = {}
  for field in dataclasses.fields(Settings):
    value = FLAGS[field.name].value
    if FLAGS.tiny and field.name in TINY and not FLAGS[field.name].present:
      value = TINY[field.name]
    values[field.name] = value
  for name in ('train_batch', 'infer_batch', 'resolution', 'num_classes', 'window_steps', 'windows'):
    if values[name] < 1:
      raise ValueError(f'--{name} must be >= 1, got {values[name]}')
  for name in ('width', 'depth'):
    if values[name] < 0:
      raise ValueError(f'--{name} must be > 0 (or 0 for the variant\'s own), got {values[name]}')
  if values['warmup_steps'] < 1:
    raise ValueError(f'--warmup_steps must be >= 1 (the first step compiles), got '
                     f'{values["warmup_steps"]}')
  if values['resolution'] < 32:
    raise ValueError(f'--resolution must be >= 32 (EfficientNet\'s total stride), got '
                     f'{values["resolution"]}')
  for label, given, allowed in (('models', FLAGS.models, DROPOUT), ('impls', FLAGS.impls, IMPLS),
                                ('modes', FLAGS.modes, MODES)):
    bad = [v for v in given if v not in allowed]
    if bad or not given:
      raise ValueError(f'--{label} has {bad or "nothing"}; expected names from {sorted(allowed)}')
  return Settings(**values)


def keras_backend():
  """Returns the Keras backend this run uses (KERAS_BACKEND, else Keras' default 'tensorflow')."""
  return os.environ.get('KERAS_BACKEND', 'tensorflow')


def missing_framework(impl):
  """Returns why `impl` cannot run here (a missing package), or None when it can."""
  if impl in KERAS_IMPLS:
    backend = keras_backend()
    if backend not in ('jax', 'tensorflow'):
      return f'KERAS_BACKEND={backend} is not supported here (jax or tensorflow)'
    needed = ['keras', backend]
  else:
    needed = ['torch', 'timm']
  absent = [name for name in needed if importlib.util.find_spec(name) is None]
  return f'{", ".join(absent)} not installed' if absent else None


# ---------------------------------------------------------------------------------------------
# Measuring (runs inside the subprocess of a row).


def time_windows(run_steps, settings, batch):
  """Times `run_steps(n)` (which runs n steps and waits for the device).

  Returns (warm-up seconds, [images/second of each timed window]).
  """
  start = time.perf_counter()
  run_steps(settings.warmup_steps)
  warmup_s = time.perf_counter() - start
  rates = []
  for _ in range(settings.windows):
    start = time.perf_counter()
    run_steps(settings.window_steps)
    rates.append(batch * settings.window_steps / (time.perf_counter() - start))
  return warmup_s, rates


def host_peak_rss_bytes():
  """Returns this process's peak resident set size in bytes (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_keras_model(impl, model, settings):
  """Returns the Keras model of `impl` ('ours' or 'keras_apps') under the settings' dtype policy,
  taking normalised NHWC images and returning logits."""
  import random

  import keras
  import numpy as np
  keras.mixed_precision.set_dtype_policy(settings.precision)
  # Not keras.utils.set_random_seed: it imports TensorFlow whenever TensorFlow is installed.
  random.seed(0)
  np.random.seed(0)
  scaled = dict(width=settings.width or None, depth=settings.depth or None)
  if impl == 'ours':
    from noisy_student_tf import models
    return models.build_model(model, settings.num_classes, resolution=settings.resolution, **scaled)
  shape = (settings.resolution, settings.resolution, 3)
  if scaled['width'] or scaled['depth']:
    # keras.applications exports only the named variants; the builder behind them takes the
    # multipliers (used for tiny CPU runs).
    from keras.src.applications import efficientnet
    from noisy_student_tf.models import scaling
    row = scaling.NAMED_VARIANTS[scaling.canonical_name(model)]
    return efficientnet.EfficientNet(
        scaled['width'] or row.width, scaled['depth'] or row.depth, settings.resolution,
        DROPOUT[model], weights=None, input_shape=shape, classes=settings.num_classes,
        classifier_activation=None)
  constructor = getattr(keras.applications, f'EfficientNet{model.upper()}')
  return constructor(weights=None, input_shape=shape, classes=settings.num_classes,
                     classifier_activation=None)


def keras_batch(settings, mode):
  """Returns numpy (images float32 [B,R,R,3], labels int32 [B]) for `mode`."""
  import numpy as np
  rng = np.random.default_rng(0)
  b, r = settings.batch(mode), settings.resolution
  images = rng.standard_normal((b, r, r, 3), dtype=np.float32)
  labels = rng.integers(0, settings.num_classes, size=(b,), dtype=np.int32)
  return images, labels


def keras_loss(labels, logits):
  """Mean softmax cross-entropy of integer labels against logits (computed in float32)."""
  import keras
  logits = keras.ops.cast(logits, 'float32')
  return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                     from_logits=True))


def jax_runner(model, settings, mode):
  """Returns run_steps(n) for a Keras model under JAX: a jitted stateless step, inputs on device."""
  import warnings

  import jax
  import keras
  warnings.filterwarnings('ignore', message='Some donated buffers were not usable')
  images, labels = (jax.device_put(a) for a in keras_batch(settings, mode))
  trainable = [v.value for v in model.trainable_variables]
  non_trainable = [v.value for v in model.non_trainable_variables]
  if mode == 'infer':
    @jax.jit
    def infer(trainable, non_trainable, images):
      logits, _ = model.stateless_call(trainable, non_trainable, images, training=False)
      return logits

    def run_steps(n):
      outputs = [infer(trainable, non_trainable, images) for _ in range(n)]
      jax.block_until_ready(outputs)
    return run_steps

  optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
  optimizer.build(model.trainable_variables)
  state = [trainable, non_trainable, [v.value for v in optimizer.variables]]

  def loss_fn(trainable, non_trainable, images, labels):
    logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
    return keras_loss(labels, logits), non_trainable

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(trainable, non_trainable, opt_vars, images, labels):
    (loss, non_trainable), grads = grad_fn(trainable, non_trainable, images, labels)
    trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
    return trainable, non_trainable, opt_vars, loss

  # Donating the state lets XLA update weights in place, as a real training loop would.
  train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))

  def run_steps(n):
    loss = None
    for _ in range(n):
      *new_state, loss = train_step(*state, images, labels)
      state[:] = new_state
    jax.block_until_ready(loss)
    if not bool(jax.numpy.isfinite(loss)):
      raise FloatingPointError(f'training loss is not finite: {loss}')
  return run_steps


def tensorflow_runner(model, settings, mode):
  """Returns run_steps(n) for a Keras model under TensorFlow (CPU smoke runs): tf.function steps."""
  import keras
  import tensorflow as tf
  images, labels = (tf.constant(a) for a in keras_batch(settings, mode))
  if mode == 'infer':
    infer = tf.function(lambda x: model(x, training=False), jit_compile=settings.tf_jit_compile)

    def run_steps(n):
      for _ in range(n):
        out = infer(images)
      out.numpy()
    return run_steps

  optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
  optimizer.build(model.trainable_variables)

  @tf.function(jit_compile=settings.tf_jit_compile)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      loss = keras_loss(labels, model(images, training=True))
    optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return loss

  def run_steps(n):
    for _ in range(n):
      loss = train_step(images, labels)
    if not bool(tf.math.is_finite(loss)):
      raise FloatingPointError(f'training loss is not finite: {loss}')
  return run_steps


def keras_peak_memory(backend):
  """Returns (bytes, kind): the device allocator's peak, or the host's peak RSS on a CPU."""
  if backend == 'jax':
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      return stats['peak_bytes_in_use'], 'device'
  else:
    import tensorflow as tf
    gpus = tf.config.list_logical_devices('GPU')
    if gpus:
      return tf.config.experimental.get_memory_info(gpus[0].name)['peak'], 'device'
  return host_peak_rss_bytes(), 'host_rss'


def keras_device(backend):
  """Returns a short description of the device the Keras backend computes on."""
  if backend == 'jax':
    import jax
    dev = jax.devices()[0]
    return f'jax {jax.__version__} {dev.platform}:{getattr(dev, "device_kind", "")}'
  import tensorflow as tf
  return f'tensorflow {tf.__version__} {"GPU" if tf.config.list_logical_devices("GPU") else "CPU"}'


def measure_keras(impl, model_name, modes, settings):
  """Measures `modes` of a Keras implementation; returns one result dict per mode."""
  import keras
  backend = keras.backend.backend()
  model = build_keras_model(impl, model_name, settings)
  framework = f'keras {keras.__version__}'
  results = []
  for mode in modes:
    make_runner = jax_runner if backend == 'jax' else tensorflow_runner
    warmup_s, rates = time_windows(make_runner(model, settings, mode), settings,
                                   settings.batch(mode))
    peak, kind = keras_peak_memory(backend)
    results.append(dict(rates=rates, warmup_s=warmup_s, peak_bytes=peak, memory_kind=kind,
                        params=int(model.count_params()), framework=framework,
                        device=keras_device(backend)))
  return results


def measure_timm(impl, model_name, modes, settings):
  """Measures `modes` of timm's efficientnet (eager or torch.compile); one result dict per mode."""
  import timm
  import torch
  import torch.nn.functional as F
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  net = timm.create_model(f'efficientnet_{model_name}', num_classes=settings.num_classes,
                          drop_rate=DROPOUT[model_name], drop_path_rate=DROP_PATH_RATE)
  net = net.to(device, memory_format=torch.channels_last)
  forward = torch.compile(net, mode=settings.torch_compile_mode) if impl == 'timm_compile' else net
  autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16,
                                    enabled=settings.precision == 'mixed_bfloat16')
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  framework = f'torch {torch.__version__} timm {timm.__version__}'
  described = torch.cuda.get_device_name() if device == 'cuda' else 'cpu'
  results = []
  for mode in modes:
    b, r = settings.batch(mode), settings.resolution
    images = torch.randn(b, 3, r, r, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, settings.num_classes, (b,), device=device)
    if device == 'cuda':
      torch.cuda.empty_cache()
      torch.cuda.reset_peak_memory_stats()
    if mode == 'train':
      net.train()
      optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

      def run_steps(n):
        for _ in range(n):
          with autocast():
            loss = F.cross_entropy(forward(images).float(), labels)
          loss.backward()
          optimizer.step()
          optimizer.zero_grad(set_to_none=True)
        sync()
        if not torch.isfinite(loss):
          raise FloatingPointError(f'training loss is not finite: {loss}')
    else:
      net.eval()

      def run_steps(n):
        with torch.inference_mode(), autocast():
          for _ in range(n):
            forward(images)
        sync()
    warmup_s, rates = time_windows(run_steps, settings, b)
    if device == 'cuda':
      peak, kind = torch.cuda.max_memory_allocated(), 'device'
    else:
      peak, kind = host_peak_rss_bytes(), 'host_rss'
    results.append(dict(rates=rates, warmup_s=warmup_s, peak_bytes=peak, memory_kind=kind,
                        params=sum(p.numel() for p in net.parameters()), framework=framework,
                        device=f'torch {device}:{described}'))
    del images, labels
  return results


def run_child(row_specs, settings):
  """Measures the rows 'IMPL:MODEL:MODE' (one implementation and model) and prints each result as
  a tagged JSON line on stdout."""
  parsed = [spec.split(':') for spec in row_specs]
  if len({(i, m) for i, m, _ in parsed}) != 1 or any(len(p) != 3 for p in parsed):
    raise ValueError(f'--child_rows must share one IMPL:MODEL, got {row_specs}')
  impl, model_name = parsed[0][:2]
  modes = [mode for _, _, mode in parsed]
  measure = measure_keras if impl in KERAS_IMPLS else measure_timm
  for mode, result in zip(modes, measure(impl, model_name, modes, settings)):
    print(ROW_TAG + json.dumps(dict(impl=impl, model=model_name, mode=mode, **result)), flush=True)


# ---------------------------------------------------------------------------------------------
# Orchestrating, tabulating (the parent process imports no framework).


def plan_rows(settings):
  """Returns the row dicts of this run in table order, skipped ones already marked."""
  rows = []
  for model in FLAGS.models:
    for mode in [m for m in MODES if m in FLAGS.modes]:
      for impl in [i for i in IMPLS if i in FLAGS.impls]:
        reason = missing_framework(impl)
        rows.append(dict(model=model, mode=mode, impl=impl, batch=settings.batch(mode),
                         resolution=settings.resolution, precision=settings.precision,
                         status='skipped' if reason else 'pending', reason=reason or ''))
  return rows


def child_groups(rows):
  """Returns lists of pending rows that share one subprocess."""
  groups = {}
  for row in rows:
    if row['status'] != 'pending':
      continue
    key = (row['impl'], row['model']) + (() if not FLAGS.one_process_per_row else (row['mode'],))
    groups.setdefault(key, []).append(row)
  # Inference first in a shared process: JAX's peak counter never resets, and training's is larger.
  return [sorted(g, key=lambda r: r['mode'] != 'infer') for g in groups.values()]


def run_group(group, settings):
  """Runs one subprocess for `group` and fills its rows with results or an error."""
  specs = ','.join(f'{r["impl"]}:{r["model"]}:{r["mode"]}' for r in group)
  cmd = [sys.executable, os.path.abspath(__file__), f'--child_rows={specs}'] + settings.as_args()
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONUNBUFFERED='1')
  log(f'running {specs}')
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=FLAGS.child_timeout_s)
    stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
  except subprocess.TimeoutExpired as e:
    stdout, stderr, code = e.stdout or '', (e.stderr or '') + '\n[timed out]', 'timeout'
    stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
  results = {}
  for line in stdout.splitlines():
    if line.startswith(ROW_TAG):
      result = json.loads(line[len(ROW_TAG):])
      results[result['mode']] = result
  for row in group:
    result = results.get(row['mode'])
    if result is None:
      tail = '\n'.join(stderr.strip().splitlines()[-15:])
      row.update(status='error', reason=f'subprocess exit {code}: {tail}')
      log(f'{row["impl"]}:{row["model"]}:{row["mode"]} failed (exit {code}):\n{tail}')
      continue
    rates = result.pop('rates')
    result.pop('impl'), result.pop('model'), result.pop('mode')
    row.update(status='ok', images_per_s=statistics.median(rates), window_images_per_s=rates,
               peak_memory_mib=result.pop('peak_bytes') / 2**20, **result)
    log(f'{row["impl"]}:{row["model"]}:{row["mode"]}: {row["images_per_s"]:.1f} img/s, '
        f'warm-up {row["warmup_s"]:.1f} s')
  log(f'  ({time.perf_counter() - start:.1f} s)')


def add_ratios(rows):
  """Sets each ok row's `ratio_to_best_peer`: its images/s over the fastest ok row of the same
  model and mode that is not ours (None when no peer ran), and `best_peer`."""
  for row in rows:
    peers = [r for r in rows if r['status'] == 'ok' and r['impl'] != 'ours'
             and (r['model'], r['mode']) == (row['model'], row['mode'])]
    best = max(peers, key=lambda r: r['images_per_s'], default=None)
    row['best_peer'] = best['impl'] if best else None
    row['ratio_to_best_peer'] = (row['images_per_s'] / best['images_per_s']
                                 if best and row['status'] == 'ok' else None)


def markdown_table(rows, settings):
  """Returns the results as a markdown table with a heading of the run's settings."""
  devices = sorted({r['device'] for r in rows if r.get('device')})
  lines = [
      f'precision {settings.precision}, {settings.resolution} px, train batch '
      f'{settings.train_batch}, infer batch {settings.infer_batch}; median of {settings.windows} '
      f'windows x {settings.window_steps} steps after {settings.warmup_steps} warm-up steps; '
      f'devices: {"; ".join(devices) or "none"}', '',
      '| model | mode | impl | batch | img/s (median) | windows min-max | x best peer | '
      'peak MiB | warm-up s | status |',
      '|---|---|---|---:|---:|---:|---:|---:|---:|---|']
  for r in rows:
    if r['status'] == 'ok':
      ratio = '-' if r['ratio_to_best_peer'] is None else f'{r["ratio_to_best_peer"]:.2f}'
      mem = f'{r["peak_memory_mib"]:,.0f}' + (' (host RSS)' if r['memory_kind'] != 'device' else '')
      lines.append(
          f'| {r["model"]} | {r["mode"]} | {r["impl"]} | {r["batch"]} | {r["images_per_s"]:,.1f} | '
          f'{min(r["window_images_per_s"]):,.1f}-{max(r["window_images_per_s"]):,.1f} | {ratio} | '
          f'{mem} | {r["warmup_s"]:.1f} | ok |')
    else:
      reason = r['reason'].splitlines()[-1] if r['reason'] else ''
      lines.append(f'| {r["model"]} | {r["mode"]} | {r["impl"]} | {r["batch"]} | - | - | - | - | - '
                   f'| {r["status"]}: {reason.replace("|", "/")} |')
  return '\n'.join(lines) + '\n'


def atomic_write(path, text):
  """Writes `text` to `path` through a temporary name and a rename."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def log(message):
  """Prints a progress line on stderr."""
  print(f'[gpu_throughput] {message}', file=sys.stderr, flush=True)


def main(argv):
  del argv
  settings = settings_from_flags()
  if FLAGS.child_rows:
    run_child(FLAGS.child_rows, settings)
    return 0
  rows = plan_rows(settings)
  for row in rows:
    if row['status'] == 'skipped':
      log(f'{row["impl"]}:{row["model"]}:{row["mode"]} skipped: {row["reason"]}')
  if FLAGS.jobs < 1:
    raise ValueError(f'--jobs must be >= 1, got {FLAGS.jobs}')
  with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
    list(pool.map(lambda group: run_group(group, settings), child_groups(rows)))
  add_ratios(rows)
  table = markdown_table(rows, settings)
  print(table)
  if FLAGS.output_dir:
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    report = dict(settings=dataclasses.asdict(settings), keras_backend=keras_backend(), rows=rows)
    atomic_write(os.path.join(FLAGS.output_dir, 'gpu_throughput.json'),
                 json.dumps(report, indent=2) + '\n')
    atomic_write(os.path.join(FLAGS.output_dir, 'gpu_throughput.md'), table)
  failed = [r for r in rows if r['status'] == 'error']
  if failed:
    log(f'{len(failed)} row(s) failed: ' + ', '.join(f'{r["impl"]}:{r["model"]}:{r["mode"]}'
                                                      for r in failed))
    return 1
  return 0


if __name__ == '__main__':
  try:
    app.run(main)
  except ValueError as e:  # bad flags: one clear line, non-zero exit
    print(f'gpu_throughput: error: {e}', file=sys.stderr)
    sys.exit(2)
