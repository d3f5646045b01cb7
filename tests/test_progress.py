"""noisy_student_tf.progress: log lines with rate and ETA, a tqdm bar, nothing, unknown totals, and
the progress of real stages (ns-filter's two passes, the training Reporter)."""

import io
import logging

import pytest

from noisy_student_tf import progress
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.train import callbacks

from test_filter import HAND_ROWS, write_records


class _Tty(io.StringIO):
  def isatty(self):
    return True


def _messages(caplog, prefix):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_log_mode_writes_rate_and_eta(caplog):
  caplog.set_level(logging.INFO)
  with progress.Progress('stage', total=100, unit='images', mode='log') as p:
    for _ in range(10):
      p.update(10)
  lines = _messages(caplog, 'stage:')
  # one line per further 10 % (not at 100 %: the summary says it), then the summary
  assert len(lines) == 10, lines
  assert lines[0].startswith('stage: 10/100 images (10%) in ')
  assert all('images/s' in line and 'ETA ' in line for line in lines[:-1])
  assert lines[-1].startswith('stage: done, 100 images in ') and lines[-1].endswith('images/s')


def test_log_mode_time_interval_and_no_summary_on_error(caplog):
  caplog.set_level(logging.INFO)
  with pytest.raises(RuntimeError):
    with progress.Progress('slow', total=10**9, unit='records', mode='log',
                           every_seconds=0) as p:
      p.update(5)
      p.update(5)
      raise RuntimeError('stop')
  lines = _messages(caplog, 'slow:')
  assert len(lines) == 2 and '10/1,000,000,000 records (0%)' in lines[1]
  assert not any('done' in line for line in lines)


def test_unknown_total_gives_rate_without_eta(caplog):
  caplog.set_level(logging.INFO)
  with progress.Progress('scan', total=None, unit='records', mode='log', every_seconds=0) as p:
    p.update(3)
    p.set_postfix('file 1')
    p.update(4)
  lines = _messages(caplog, 'scan:')
  assert lines[0].startswith('scan: 3 records in ') and 'records/s' in lines[0]
  assert lines[1].endswith('[file 1]')
  assert not any('ETA' in line or '%' in line for line in lines)
  assert lines[-1].startswith('scan: done, 7 records')
  stream = io.StringIO()
  with progress.Progress('scan', total=None, unit='records', mode='bar', stream=stream) as p:
    p.update(7)
  assert '7records [' in stream.getvalue() and 'records/s]' in stream.getvalue()


def test_bar_mode_writes_a_tqdm_bar_to_the_stream(caplog):
  caplog.set_level(logging.INFO)
  stream = io.StringIO()
  with progress.Progress('train', total=10, unit='steps', mode='bar', stream=stream) as p:
    for _ in range(10):
      p.update(1)
    p.set_postfix('loss 0.5')
  text = stream.getvalue()
  assert 'train: 100%|' in text and '10/10 [' in text and 'steps/s' in text
  assert 'loss 0.5' in text and text.endswith('\n')
  assert not _messages(caplog, 'train')  # a bar, no log lines


def test_bar_mode_prints_log_records_above_the_bar():
  stream = io.StringIO()
  logger = logging.getLogger('noisy_student_tf.test_progress')
  handler = logging.StreamHandler(stream)
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with progress.Progress('eval', total=4, unit='images', mode='bar', stream=stream,
                           logger=logger) as p:
      p.update(2)
      assert handler.stream is not stream  # redirected through tqdm.write while the bar shows
      logger.info('shard 1 done')
      p.update(2)
    assert handler.stream is stream
  finally:
    logger.removeHandler(handler)
  text = stream.getvalue()
  assert '\nshard 1 done\n' in text or text.startswith('shard 1 done\n') or \
      '\rshard 1 done\n' in text
  assert '4/4' in text


def test_none_writes_nothing_and_modes_resolve(caplog):
  caplog.set_level(logging.INFO)
  stream = io.StringIO()
  with progress.Progress('quiet', total=5, mode='none', stream=stream) as p:
    p.update(5)
  assert stream.getvalue() == '' and not caplog.records
  assert progress.resolve('auto', io.StringIO()) == 'log'
  assert progress.resolve('auto', _Tty()) == 'bar'
  assert callbacks.PROGRESS_MODES == progress.MODES == ('auto', 'bar', 'log', 'none')
  with pytest.raises(ValueError, match='progress must be one of'):
    progress.Progress('x', mode='fancy')
  assert list(progress.track([1, 2, 3], 'list', mode='none')) == [1, 2, 3]


def test_filter_reports_both_passes_in_log_mode(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  inp = write_records(tmp_path / 'pseudo', HAND_ROWS, num_classes=3)
  filter_lib.filter_records(filter_lib.FilterConfig(
      input=str(inp), output_dir=str(tmp_path / 'out'), per_class=4, num_shards=2,
      read_batch=2, progress='log'))
  pass1 = _messages(caplog, 'ns-filter pass 1')
  pass2 = _messages(caplog, 'ns-filter pass 2')
  # pass 1: total unknown here (no labeler stats.json): rate only; pass 2: 13 records, with ETA
  assert pass1 and all('records/s' in line and 'ETA' not in line for line in pass1)
  assert pass1[-1].startswith('ns-filter pass 1 (select): done, 13 records')
  assert any('/13 records' in line and 'ETA' in line for line in pass2), pass2
  assert pass2[-1].startswith('ns-filter pass 2 (copy): done, 13 records')
  caplog.clear()
  with pytest.raises(ValueError, match='progress must be one of'):
    filter_lib.filter_records(filter_lib.FilterConfig(input=str(inp), output_dir=str(tmp_path / 'o2'),
                                                      progress='loud'))
  filter_lib.filter_records(filter_lib.FilterConfig(input=str(inp), output_dir=str(tmp_path / 'o3'),
                                                    progress='none'))
  assert not _messages(caplog, 'ns-filter pass')


def test_training_reporter_log_and_bar(tmp_path, caplog, capsys):
  caplog.set_level(logging.INFO)
  reporter = callbacks.Reporter(str(tmp_path), 10, write=False, mode='log', initial_step=4)
  for step in (6, 8, 10):
    reporter.scalars('train', step, {'loss': 1.0 / step})
  reporter.close()
  metric_lines = _messages(caplog, 'train step')
  assert metric_lines == ['train step 6/10: loss 0.1667', 'train step 8/10: loss 0.125',
                          'train step 10/10: loss 0.1']  # unchanged
  progress_lines = _messages(caplog, 'train:')
  assert progress_lines[0].startswith('train: 6/10 steps (60%)') and 'ETA' in progress_lines[0]
  assert progress_lines[-1].startswith('train: done, 10 steps in ')
  caplog.clear()
  reporter = callbacks.Reporter(str(tmp_path), 4, write=False, mode='bar')
  for step in (2, 4):
    reporter.scalars('train', step, {'loss': 0.5})
  reporter.scalars('eval', 4, {'top1': 0.25})
  reporter.close()
  err = capsys.readouterr().err
  assert 'train: 100%|' in err and '4/4 [' in err and 'loss 0.5' in err and 'steps/s' in err
  assert _messages(caplog, 'eval step') == ['eval step 4/4: top1 0.25']
  assert not _messages(caplog, 'train')
