"""Progress of the long stages (training, labeling, filtering, evaluation, warm-up), one way.

`Progress(desc, total, unit, mode)` shows, by mode:
- 'bar':  a tqdm bar on `stream` (default stderr) with count, rate and ETA; log records that the
          console handlers write to the same stream meanwhile are printed above the bar, not
          through it;
- 'log':  plain log lines with count, rate and ETA (rate over the last interval, so that a slow
          start such as graph tracing does not distort it), whenever a further `every_fraction`
          of the total is done or `every_seconds` have passed, and one summary line at the end;
- 'none': nothing;
- 'auto': 'bar' when the stream is a terminal, 'log' otherwise.
An unknown total (None) gives the count and the rate without percentage or ETA.

    with progress.Progress('ns-filter pass 1', total=None, unit='records', mode=mode) as p:
      for batch in batches:
        p.update(len(batch))
"""

import logging
import math
import sys
import time

import tqdm

from noisy_student_tf import settings

MODES = ('auto', 'bar', 'log', 'none')
EVERY_SECONDS = 30.0
EVERY_FRACTION = 0.1

log = logging.getLogger('noisy_student_tf.progress')


def mode_setting(default='auto'):
  """The `progress` field of a stage's config: one of MODES, not part of its fingerprint.
  Returns a dataclasses.Field (settings.setting)."""
  return settings.setting(default, 'auto = a bar on a terminal, log lines otherwise.',
                          choices=MODES, result=False)


def check_mode(mode):
  """Raises ValueError unless `mode` is one of MODES."""
  if mode not in MODES:
    raise ValueError(f'progress must be one of {MODES}, got {mode!r}')


def resolve(mode, stream=None):
  """Returns the display `mode` means on `stream` (default stderr): 'bar', 'log' or 'none'."""
  check_mode(mode)
  if mode != 'auto':
    return mode
  stream = stream or sys.stderr
  try:
    return 'bar' if stream.isatty() else 'log'
  except (AttributeError, ValueError):  # no isatty, or a closed stream
    return 'log'


def _count(n):
  return f'{n:,}' if isinstance(n, int) else f'{n:,.4g}'


def _rate(rate):
  return tqdm.tqdm.format_sizeof(rate) if rate >= 1 else f'{rate:.3g}'


class _AboveBar:
  """A stream for logging handlers: writes through tqdm.write, above the bars on `stream`."""

  def __init__(self, stream):
    self.stream = stream

  def write(self, text):
    if text:
      tqdm.tqdm.write(text, file=self.stream, end='')

  def flush(self):
    self.stream.flush()


def _console_handlers(logger):
  """The StreamHandlers (absl's inner one included) of `logger` and its ancestors."""
  found, current = [], logger
  while current is not None:
    for h in current.handlers:
      h = getattr(h, 'python_handler', h)  # absl.logging.ABSLHandler wraps a StreamHandler
      if isinstance(h, logging.StreamHandler) and h not in found:
        found.append(h)
    current = current.parent if current.propagate else None
  return found


class Progress:
  """Progress of one stage: see the module doc.

  desc: the stage's name, starting each line.  total: number of units when known, else None.
  unit: 'steps', 'images', 'records', ...  mode: one of MODES.  initial: units already done
  (a resumed run).  stream: where the bar goes (default stderr; 'auto' looks at it).  logger:
  where the log lines go (default `noisy_student_tf.progress`).  every_seconds / every_fraction:
  log mode's interval (a line when either is reached).
  """

  def __init__(self, desc, total=None, unit='it', mode='auto', *, initial=0, stream=None,
               logger=None, every_seconds=EVERY_SECONDS, every_fraction=EVERY_FRACTION):
    self.desc, self.unit = desc, unit
    self.total = None if total is None else int(total)
    self.mode = resolve(mode, stream)
    self.n = self._initial = int(initial)
    self._log = logger or log
    self._every_seconds, self._every_fraction = every_seconds, every_fraction
    self._postfix = ''
    self._start = self._last_t = time.monotonic()
    self._last_n = self.n
    self._last_mark = self._mark(self.n)
    self._closed = False
    self._bar = None
    self._swapped = []
    if self.mode == 'bar':
      stream = stream or sys.stderr
      self._bar = tqdm.tqdm(total=self.total, desc=desc, unit=unit, initial=self.n, file=stream,
                            dynamic_ncols=True, leave=None, smoothing=0.1)
      for h in _console_handlers(self._log):
        if h.stream is stream:
          self._swapped.append((h, h.setStream(_AboveBar(stream))))

  def _mark(self, n):
    if not self.total or not self._every_fraction:
      return 0
    return math.floor(n / self.total / self._every_fraction + 1e-9)

  def update(self, n=1):
    """Adds `n` units done."""
    self.update_to(self.n + n)

  def update_to(self, n):
    """Sets the number of units done to `n` (e.g. the global step)."""
    delta, self.n = n - self.n, n
    if self._bar is not None:
      self._bar.update(delta)
    elif self.mode == 'log':
      now = time.monotonic()
      mark = self._mark(n)
      if (mark > self._last_mark and (self.total is None or n < self.total)) or \
          now - self._last_t >= self._every_seconds:
        self._log_line(now)
        self._last_mark = mark

  def set_total(self, total):
    """Sets the total once it becomes known (None: unknown)."""
    self.total = None if total is None else int(total)
    self._last_mark = self._mark(self.n)
    if self._bar is not None:
      self._bar.total = self.total
      self._bar.refresh()

  def set_postfix(self, text):
    """Text shown after the counts (bar and log lines), e.g. the current loss or corruption."""
    self._postfix = str(text)
    if self._bar is not None:
      self._bar.set_postfix_str(self._postfix, refresh=False)

  def _log_line(self, now):
    dt = now - self._last_t
    rate = (self.n - self._last_n) / dt if dt > 0 else 0.0
    elapsed = tqdm.tqdm.format_interval(now - self._start)
    if self.total:
      pct = 100.0 * self.n / self.total
      eta = (tqdm.tqdm.format_interval((self.total - self.n) / rate) if rate > 0 else '?')
      text = (f'{self.desc}: {_count(self.n)}/{_count(self.total)} {self.unit} ({pct:.0f}%) in '
              f'{elapsed}, {_rate(rate)} {self.unit}/s, ETA {eta}')
    else:
      text = f'{self.desc}: {_count(self.n)} {self.unit} in {elapsed}, {_rate(rate)} {self.unit}/s'
    if self._postfix:
      text += f' [{self._postfix}]'
    self._log.info('%s', text)
    self._last_t, self._last_n = now, self.n

  def close(self, summary=True):
    """Ends the display; log mode writes a summary line (overall rate) unless `summary` is False
    or nothing was done."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
      for h, stream in reversed(self._swapped):
        h.setStream(stream)
    elif self.mode == 'log' and summary and self.n > self._initial:
      seconds = time.monotonic() - self._start
      done = self.n - self._initial
      counts = (f'{_count(self.n)}/{_count(self.total)}' if self.total and self.n != self.total
                else _count(self.n))
      self._log.info('%s: done, %s %s in %s, %s %s/s', self.desc, counts, self.unit,
                     tqdm.tqdm.format_interval(seconds), _rate(done / max(seconds, 1e-9)),
                     self.unit)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *unused):
    self.close(summary=exc_type is None)


def track(iterable, desc, total=None, unit='it', mode='auto', *, size=None, **kwargs):
  """Yields the items of `iterable`, counting `size(item)` units each (default 1; total: default
  len(iterable) when it has one and size is not given).  kwargs: those of Progress."""
  if total is None and size is None and hasattr(iterable, '__len__'):
    total = len(iterable)
  with Progress(desc, total, unit, mode, **kwargs) as p:
    for item in iterable:
      yield item
      p.update(1 if size is None else size(item))
