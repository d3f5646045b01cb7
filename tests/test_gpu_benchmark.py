"""benchmarks/gpu_throughput.py at tiny sizes on the CPU: it runs end to end in a subprocess, measures
this project's EfficientNet and keras.applications', reports timm as skipped when PyTorch/timm are
absent, and writes a JSON + markdown table with sane numbers."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'gpu_throughput.py'
# JAX is the backend of the GPU runs; the project's own venv has TensorFlow only.
BACKEND = 'jax' if importlib.util.find_spec('jax') else 'tensorflow'


def _run(tmp_path, *args):
  # One thread per framework pool.  The measuring subprocesses run one after the other (--jobs=1)
  # and share a JAX compilation cache in tmp_path: building the network runs each kernel
  # initializer as its own XLA program, one compile per weight shape, and keras.applications' B0
  # has the same shapes as ours, so the second subprocess reads them instead of compiling them
  # again (~30% of the test's CPU time). The timed windows come after the warm-up either way.
  env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='',
             JAX_PLATFORMS='cpu', TF_NUM_INTRAOP_THREADS='1', TF_NUM_INTEROP_THREADS='1',
             XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                        env=env, cwd=tmp_path, timeout=600)


def test_tiny_cpu_run_measures_ours_and_keras_applications(tmp_path):
  out = tmp_path / 'out'
  # float32: bfloat16 is emulated on most CPUs and would only slow the test down.
  proc = _run(tmp_path, '--tiny', '--models=b0', '--precision=float32', '--noone_process_per_row',
              '--jobs=1', f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / 'gpu_throughput.json').read_text())
  assert report['keras_backend'] == BACKEND
  assert report['settings']['train_batch'] == 4 and report['settings']['resolution'] == 32
  rows = {(r['impl'], r['mode']): r for r in report['rows']}
  assert set(rows) == {(i, m) for i in ('ours', 'keras_apps', 'timm_eager', 'timm_compile')
                       for m in ('train', 'infer')}
  for impl in ('ours', 'keras_apps'):
    for mode in ('train', 'infer'):
      row = rows[(impl, mode)]
      assert row['status'] == 'ok', row
      assert row['model'] == 'b0' and row['batch'] == 4
      assert len(row['window_images_per_s']) == 2
      assert all(0 < r < 1e6 for r in row['window_images_per_s'])
      assert min(row['window_images_per_s']) <= row['images_per_s'] <= max(
          row['window_images_per_s'])
      assert 10 < row['peak_memory_mib'] < 64 * 1024
      assert row['params'] > 10_000
      assert row['best_peer'] == 'keras_apps' or row['best_peer'].startswith('timm')
  # Both Keras rows build the same tiny network, so their sizes agree closely (keras.applications
  # adds its normalisation layer's statistics).
  assert abs(rows[('ours', 'train')]['params'] - rows[('keras_apps', 'train')]['params']) < 100
  assert rows[('keras_apps', 'train')]['ratio_to_best_peer'] == pytest.approx(1.0) or (
      rows[('keras_apps', 'train')]['best_peer'] != 'keras_apps')
  timm_missing = importlib.util.find_spec('torch') is None or importlib.util.find_spec('timm') is None
  for mode in ('train', 'infer'):
    for impl in ('timm_eager', 'timm_compile'):
      assert rows[(impl, mode)]['status'] == ('skipped' if timm_missing else 'ok')
  table = (out / 'gpu_throughput.md').read_text()
  assert '| b0 | train | ours | 4 |' in table and '| b0 | infer | keras_apps | 4 |' in table
  assert table in proc.stdout


def test_bad_flag_value_exits_with_a_clear_error(tmp_path):
  proc = _run(tmp_path, '--tiny', '--models=b9')
  assert proc.returncode != 0
  assert "--models has ['b9']" in proc.stderr
