"""ns-filter at scale: synthetic pseudo-label records (default 1,000,000 over 1000 classes).

Writes the records in a child process (top-5 probabilities, a 64-byte stand-in image, 292 bytes
a record, a skewed class distribution so that some classes are cut to K and others duplicated),
then runs, each in its own process so that its peak memory is its own (this process imports no
TensorFlow and holds no record: a child's peak RSS also counts its parent's at the spawn):
  ours   the `ns-filter` binary (streaming passes; memory grows with neither K nor the records);
  naive  the peer: every record read into memory, sorted per class, written out (skipped, with
         a note, when its estimated memory does not fit in 60% of the available memory);
  previous  with --previous=REV: ns-filter's filter.py of git revision REV (16e599d: the
         candidate pool of up to 2 x classes x K entries), its stats checked against ours.
Prints a table: seconds, CPU seconds, records per second and per CPU-second, peak RSS (MB), and
the ratios ours / each peer.  Goal: ours at most 1.5 GB (TensorFlow included) at the paper's scale.
Each filter's output shards are deleted as soon as it has run.

--sink=devnull, for outputs that do not fit on the disk (at K = 130,000 and 1000 classes they are
130M records, ~38 GB; the 20M input is 5.8 GB): the filters run unchanged, each output shard's
writer is a real tf.io.TFRecordWriter (length, CRC32C, one write call per record) whose file is
/dev/null, and an empty file stands in for the shard.  Every pass reads and selects as it does
with --sink=disk and every copy goes through the writer; what it does not measure is the output
reaching the disk (and its page cache).

  python benchmarks/filter_scale.py [--records=1000000] [--classes=1000] [--per_class=1000]
  python benchmarks/filter_scale.py --records=20000000 --classes=1000 --per_class=130000 \
      --sink=devnull --skip_naive --work_dir=DIR --output_dir=benchmarks/results
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

TOP_K = 5
IMAGE_BYTES = 64
ID_WIDTH = 12
GOAL_MB = 1536  # ours, TensorFlow's import included
TF_MB = 1024  # the naive peer's TensorFlow and buffers, for its memory estimate
NAIVE_BYTES_PER_RECORD = 100  # a Python bytes object's header, list slot and allocator slack


def _template(label, num_classes):
  """Returns (three byte strings, confidence_first) of a serialized Example of class `label`
  with two slots cut out: a 4-byte confidence and a 12-byte source id.  A record is the three
  parts joined around the two slots, in the order the serialization put them in
  (confidence_first; protobuf does not fix the order of map entries)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sentinel_conf = 0.123456789
  sentinel_id = b'#' * ID_WIDTH
  indices = [label] + [(label + j) % num_classes for j in range(1, TOP_K)]
  feature = {
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'\x00' * IMAGE_BYTES])),
      'image/source_id': tf.train.Feature(bytes_list=tf.train.BytesList(value=[sentinel_id])),
      'pseudo/probabilities': tf.train.Feature(float_list=tf.train.FloatList(
          value=[0.6, 0.1, 0.1, 0.1, 0.1])),
      'pseudo/indices': tf.train.Feature(int64_list=tf.train.Int64List(value=indices)),
      'pseudo/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      'pseudo/confidence': tf.train.Feature(float_list=tf.train.FloatList(value=[sentinel_conf])),
      'pseudo/generation': tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
  }
  raw = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
  (first, first_len), (second, second_len) = sorted(
      [(raw.index(struct.pack('<f', sentinel_conf)), 4), (raw.index(sentinel_id), ID_WIDTH)])
  parts = (raw[:first], raw[first + first_len:second], raw[second + second_len:])
  return parts, first_len == 4


def _record(template, confidence, index):
  """The serialized record of `template` with this confidence (float) and source id (int)."""
  (head, middle, tail), confidence_first = template
  conf_bytes, id_bytes = struct.pack('<f', confidence), b'%012d' % index
  if confidence_first:
    return b''.join((head, conf_bytes, middle, id_bytes, tail))
  return b''.join((head, id_bytes, middle, conf_bytes, tail))


def write_synthetic(folder, num_records, num_classes, num_files, seed=0):
  """Writes `num_records` records into `num_files` shards (and a stats.json saying so); returns
  the seconds taken."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from noisy_student_tf.selftrain import shards  # pylint: disable=g-import-not-at-top
  start = time.time()
  rng = np.random.default_rng(seed)
  # Zipf-like class frequencies: the head classes overflow K, the tail ones need copies.
  weights = 1.0 / np.arange(1, num_classes + 1) ** 0.8
  labels = rng.choice(num_classes, size=num_records, p=weights / weights.sum())
  conf = rng.beta(2, 2, size=num_records).astype(np.float32)
  templates = [_template(c, num_classes) for c in range(num_classes)]
  os.makedirs(folder, exist_ok=True)
  per_file = -(-num_records // num_files)
  for f in range(num_files):
    path = os.path.join(folder, shards.shard_name('pseudo', f, num_files))
    with tf.io.TFRecordWriter(path) as w:
      for i in range(f * per_file, min(num_records, (f + 1) * per_file)):
        w.write(_record(templates[labels[i]], conf[i], i))
  shards.write_json(os.path.join(folder, shards.STATS_FILE),
                    {'num_classes': num_classes, 'synthetic': _input_signature(
                        num_records, num_classes, num_files, seed)})
  return time.time() - start


def _input_signature(num_records, num_classes, num_files, seed):
  """What write_synthetic was asked for, as stored in the input's stats.json."""
  return {'records': num_records, 'classes': num_classes, 'files': num_files, 'seed': seed}


def _has_input(folder, num_records, num_classes, num_files):
  """True when `folder` already holds write_synthetic's records for these arguments."""
  try:
    with open(os.path.join(folder, 'stats.json')) as f:
      stored = json.load(f).get('synthetic')
  except (OSError, ValueError):
    return False
  return stored == _input_signature(num_records, num_classes, num_files, 0)


def use_sink(sink, output_dir):
  """With sink 'devnull': from now on, tf.io.TFRecordWriter(path) for a path in `output_dir`
  creates an empty file at path and returns a real TFRecordWriter on /dev/null (sink 'disk':
  nothing changes)."""
  if sink == 'disk':
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  real = tf.io.TFRecordWriter
  folder = os.path.abspath(output_dir)

  def open_writer(path, options=None):
    if os.path.dirname(os.path.abspath(path)) != folder:
      return real(path, options)
    open(path, 'wb').close()  # the shard the filter renames when done
    return real(os.devnull, options)

  tf.io.TFRecordWriter = open_writer


def _filter_child(sink, argv):
  """Runs the ns-filter binary's main in this process with `argv` (its flags), through `sink`."""
  output_dir = next(a.split('=', 1)[1] for a in argv if a.startswith('--output_dir='))
  use_sink(sink, output_dir)
  from noisy_student_tf.cli import filter as filter_cli  # pylint: disable=g-import-not-at-top
  sys.argv = ['ns-filter'] + argv
  filter_cli.run()


def _previous_child(module_path, sink, input_dir, output_dir, threshold, per_class):
  """Runs the filter_records of an earlier revision's selftrain/filter.py (at `module_path`,
  importing today's package for everything else) through `sink`."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  use_sink(sink, output_dir)
  spec = importlib.util.spec_from_file_location('previous_filter', module_path)
  previous = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(previous)
  previous.filter_records(previous.FilterConfig(
      input=input_dir, output_dir=output_dir, threshold=threshold, per_class=per_class,
      num_shards=16, progress='none'))


def naive_filter(input_dir, output_dir, threshold, per_class, sink='disk'):
  """The peer: holds every record in memory, then sorts per class (what a simple script does)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  use_sink(sink, output_dir)
  files = sorted(tf.io.gfile.glob(os.path.join(input_dir, '*.tfrecord')))
  features = {'pseudo/label': tf.io.FixedLenFeature([], tf.int64),
              'pseudo/confidence': tf.io.FixedLenFeature([], tf.float32)}
  records, labels, conf = [], [], []
  for batch in tf.data.TFRecordDataset(files).batch(8192).as_numpy_iterator():
    parsed = tf.io.parse_example(batch, features)
    records.extend(batch.tolist())
    labels.append(parsed['pseudo/label'].numpy())
    conf.append(parsed['pseudo/confidence'].numpy())
  labels, conf = np.concatenate(labels), np.concatenate(conf)
  os.makedirs(output_dir, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(output_dir, 'naive.tfrecord')) as w:
    for c in np.unique(labels):
      idx = np.flatnonzero((labels == c) & (conf >= threshold))
      idx = idx[np.argsort(-conf[idx], kind='stable')][:per_class]
      for j in range(per_class):
        w.write(records[idx[j % len(idx)]])


def _run_child(args):
  """Runs `args` in a child process; returns (seconds, CPU seconds (user + system), that child's
  peak RSS in MB)."""
  start = time.time()
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.time() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f'{args[:3]} failed with status {status}')
  return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def _available_mb():
  """MemAvailable of /proc/meminfo in MB (None where there is no such file)."""
  try:
    with open('/proc/meminfo') as f:
      fields = dict(line.split(':', 1) for line in f)
    return int(fields['MemAvailable'].split()[0]) / 1024.0
  except (OSError, KeyError, ValueError):
    return None


def naive_fits(num_records, input_mb):
  """(True, '') when the naive peer's estimated peak (every record as a Python bytes object plus
  TensorFlow) fits in 60% of the available memory, else (False, why)."""
  need_mb = input_mb + num_records * NAIVE_BYTES_PER_RECORD / 2**20 + TF_MB
  available = _available_mb()
  if available is None or need_mb <= 0.6 * available:
    return True, ''
  return False, (f'naive peer skipped: it would hold ~{need_mb:,.0f} MB, more than 60% of the '
                 f'{available:,.0f} MB available')


def output_fits(folder, output_mb):
  """(True, '') when `output_mb` of shards fit in half the free space of `folder`'s disk, else
  (False, why)."""
  free_mb = shutil.disk_usage(folder).free / 2**20
  if output_mb <= 0.5 * free_mb:
    return True, ''
  return False, (f'the output (~{output_mb:,.0f} MB) does not fit in half the {free_mb:,.0f} MB '
                 'free: use --sink=devnull')


def _remove_shards(folder):
  """Deletes the *.tfrecord files of `folder` (the outputs can be tens of GB)."""
  for name in os.listdir(folder):
    if name.endswith('.tfrecord'):
      os.remove(os.path.join(folder, name))


def table(rows, num_records):
  """The markdown table (a list of lines) of (name, seconds, CPU seconds, peak MB) rows, ours
  first, with the ratio ours / each other row."""
  lines = ['| filter | seconds | CPU s | records/s | records per CPU-s | peak RSS (MB) |',
           '|---|---|---|---|---|---|']
  for name, s, cpu, mb in rows:
    lines.append(f'| {name} | {s:.1f} | {cpu:.1f} | {num_records / s:,.0f} | '
                 f'{num_records / cpu:,.0f} | {mb:,.0f} |')
  _, s0, c0, m0 = rows[0]
  for name, s1, c1, m1 in rows[1:]:
    lines.append(f'| ratio ours / {name.split(" (")[0]} | {s0 / s1:.2f} | {c0 / c1:.2f} | '
                 f'{s1 / s0:.2f} | {c1 / c0:.2f} | {m0 / m1:.2f} |')
  return lines


def write_results(output_dir, result, lines):
  """Writes `result` (a dict) as filter_scale-<records>-K<per_class>-<sink>.json and `lines` as
  the .md of the same name into `output_dir`, each under a temporary name, renamed."""
  os.makedirs(output_dir, exist_ok=True)
  name = f'filter_scale-{result["records"]}-K{result["per_class"]}-{result["sink"]}'
  for ext, text in (('json', json.dumps(result, indent=1)), ('md', '\n'.join(lines) + '\n')):
    path = os.path.join(output_dir, f'{name}.{ext}')
    with open(path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(path + '.tmp', path)
    print(f'wrote {path}')


def main():
  """Parses arguments, writes the records, runs both filters, prints the table."""
  if sys.argv[1:2] == ['--filter_child']:  # [--filter_child, SINK, ns-filter flags...]
    _filter_child(sys.argv[2], sys.argv[3:])
    return
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--records', type=int, default=1_000_000)
  p.add_argument('--classes', type=int, default=1000)
  p.add_argument('--per_class', type=int, default=1000)
  p.add_argument('--threshold', type=float, default=0.3)
  p.add_argument('--files', type=int, default=16)
  p.add_argument('--work_dir', default=None, help='default: a temporary folder, removed after; '
                 'a work dir keeps the input records and reuses them when the arguments match')
  p.add_argument('--sink', choices=('disk', 'devnull'), default='disk',
                 help='where the output shards go (devnull: see the module doc)')
  p.add_argument('--output_dir', default=None,
                 help='also write the table as filter_scale-<records>-K<per_class>-<sink>.json '
                 'and .md here (e.g. benchmarks/results)')
  p.add_argument('--skip_naive', action='store_true')
  p.add_argument('--previous', default=None, metavar='REV',
                 help='also run ns-filter as it was at git revision REV (its '
                 'selftrain/filter.py on today\'s package), e.g. 16e599d: the candidate pool')
  p.add_argument('--previous_child', nargs=3, help=argparse.SUPPRESS)
  p.add_argument('--naive_child', nargs=2, help=argparse.SUPPRESS)
  p.add_argument('--write_child', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.naive_child:
    naive_filter(a.naive_child[0], a.naive_child[1], a.threshold, a.per_class, a.sink)
    return
  if a.write_child:
    write_synthetic(a.write_child, a.records, a.classes, a.files)
    return
  if a.previous_child:
    _previous_child(*a.previous_child[:1], a.sink, *a.previous_child[1:], a.threshold,
                    a.per_class)
    return
  # This process never imports TensorFlow nor holds the records: a child's ru_maxrss also
  # counts the memory of the process it was spawned from.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  tmp = tempfile.TemporaryDirectory() if a.work_dir is None else None
  work = a.work_dir or tmp.name
  inp = os.path.join(work, 'pseudo')
  load_before = os.getloadavg()
  if _has_input(inp, a.records, a.classes, a.files):
    how = 'reused from an earlier run'
  else:
    write_s, write_cpu, _ = _run_child([sys.executable, __file__, f'--records={a.records}',
                                        f'--classes={a.classes}', f'--files={a.files}',
                                        '--write_child', inp])
    how = f'written in {write_s:.1f} s ({write_cpu:.1f} CPU s)'
  size_mb = sum(os.path.getsize(os.path.join(inp, f)) for f in os.listdir(inp)) / 2**20
  print(f'{a.records} records, {a.classes} classes, {a.files} files, {size_mb:.0f} MB: {how}')
  if a.sink == 'disk':
    fits, why = output_fits(work, a.per_class * a.classes * size_mb / a.records)
    if not fits:
      raise SystemExit(why)
  ours_dir = os.path.join(work, 'ours')
  flags = [f'--input={inp}', f'--output_dir={ours_dir}', f'--threshold={a.threshold}',
           f'--per_class={a.per_class}', '--num_shards=16', '--progress=none']
  ours = _run_child([sys.executable, '-m', 'noisy_student_tf.cli.filter'] + flags
                    if a.sink == 'disk' else
                    [sys.executable, __file__, '--filter_child', a.sink] + flags)
  with open(os.path.join(ours_dir, 'stats.json')) as f:
    stats = json.load(f)
  _remove_shards(ours_dir)
  rows = [(f'ours (ns-filter, streaming; output: {a.sink})',) + ours]
  if a.previous:
    module = os.path.join(work, f'filter_{a.previous}.py')
    with open(module, 'wb') as f:
      f.write(subprocess.run(['git', 'show', f'{a.previous}:noisy_student_tf/selftrain/filter.py'],
                             check=True, capture_output=True,
                             cwd=os.path.dirname(os.path.abspath(__file__))).stdout)
    previous_dir = os.path.join(work, 'previous')
    rows.append((f'previous ns-filter ({a.previous}, candidate pool; output: {a.sink})',) +
                _run_child([sys.executable, __file__, f'--threshold={a.threshold}',
                            f'--per_class={a.per_class}', f'--sink={a.sink}', '--previous_child',
                            module, inp, previous_dir]))
    with open(os.path.join(previous_dir, 'stats.json')) as f:
      previous_stats = json.load(f)
    _remove_shards(previous_dir)
    for key in ('class_counts_unique_kept', 'class_counts_output', 'confidence_histogram',
                'shard_sizes'):
      if previous_stats[key] != stats[key]:
        raise SystemExit(f'the previous filter\'s {key} differs from ours')
  fits, why = naive_fits(a.records, size_mb)
  if not a.skip_naive and fits:
    naive_dir = os.path.join(work, 'naive')
    rows.append((f'naive peer (all in memory; output: {a.sink})',) + _run_child(
        [sys.executable, __file__, f'--threshold={a.threshold}', f'--per_class={a.per_class}',
         f'--sink={a.sink}', '--naive_child', inp, naive_dir]))
    _remove_shards(naive_dir)
  load_after = os.getloadavg()
  lib_s = stats['seconds']
  lines = [f'ns-filter at scale: {a.records:,} synthetic records ({size_mb:,.0f} MB), '
           f'{a.classes} classes, K = {a.per_class:,}, threshold {a.threshold}; output sink: '
           f'{a.sink}; {os.cpu_count()} CPUs, load average (1 min) before {load_before[0]:.2f}, '
           f'after {load_after[0]:.2f}', ''] + table(rows, a.records) + [
               '', f'ours: {stats["num_output"]:,} records written ({stats["num_unique_kept"]:,} '
               f'unique, {stats["num_above_threshold"]:,} above the threshold); inside the library '
               f'(every pass, without process start-up) {lib_s:.1f} s, '
               f'{a.records / lib_s:,.0f} records/s; second-look entries held at most: '
               f'{stats["candidate_pool_peak"]:,}',
               f'ours at most {GOAL_MB:,} MB: {"yes" if ours[2] <= GOAL_MB else "NO"} '
               f'({ours[2]:.0f} MB, TensorFlow included); seconds include starting Python and '
               'TensorFlow']
  if a.sink == 'devnull':
    lines += ['', 'Output sink devnull: each output shard is written by a real tf.io.TFRecordWriter '
              'on /dev/null (an empty file stands in for the shard); every pass, the selection '
              'and every copy run as with --sink=disk, only the output does not reach the disk.']
  if why and not a.skip_naive:
    lines += ['', why]
  print('\n' + '\n'.join(lines))
  if a.output_dir:
    write_results(a.output_dir, {
        'records': a.records, 'classes': a.classes, 'per_class': a.per_class,
        'threshold': a.threshold, 'files': a.files, 'input_mb': round(size_mb, 1), 'sink': a.sink,
        'cpus': os.cpu_count(), 'load_average_before': list(load_before),
        'load_average_after': list(load_after),
        'runs': [{'name': n, 'seconds': round(sec, 2), 'cpu_seconds': round(cpu, 2),
                  'peak_rss_mb': round(mb, 1), 'records_per_second': round(a.records / sec, 1),
                  'records_per_cpu_second': round(a.records / cpu, 1)}
                 for n, sec, cpu, mb in rows],
        'library_seconds': lib_s, 'num_output': stats['num_output'],
        'num_unique_kept': stats['num_unique_kept'],
        'num_above_threshold': stats['num_above_threshold'],
        'second_look_peak_entries': stats['candidate_pool_peak'],
        'goal_peak_rss_mb': GOAL_MB, 'meets_goal': ours[2] <= GOAL_MB}, lines)
  if tmp:
    tmp.cleanup()


if __name__ == '__main__':
  main()
