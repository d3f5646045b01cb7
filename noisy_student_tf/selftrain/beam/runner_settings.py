"""The `runner` and `beam_options` settings of ns-label and ns-filter, and their checks.

Beam-free: LabelConfig and FilterConfig import it whether or not apache-beam is installed.
"""

import shlex

from noisy_student_tf.settings import setting

RUNNERS = ('local', 'beam')
# The source kinds (data/sources.py) the Beam labeler reads; tfds: is tensorflow-datasets' own.
BEAM_SOURCE_KINDS = ('folder', 'images', 'digits', 'tfrecord', 'pseudo')
INSTALL_HINT = "pip install 'noisy-student-tf[beam]' (apache-beam==2.77.0)"


def runner_setting(stage):
  """The `runner` field of a stage config ('label' or 'filter'): local or beam (result=False: both
  write the same records)."""
  local = {'label': 'label in this process, shard by shard',
           'filter': 'filter in this process in two streaming passes'}[stage]
  return setting('local', f'local: {local}; beam: run it as an Apache Beam pipeline (needs '
                 f'{INSTALL_HINT}; Beam options in --beam_options).', choices=RUNNERS,
                 result=False)


def beam_options_setting(used_with='--runner=beam'):
  """A `beam_options` field: Beam's own pipeline options as one string (result=False), used
  with the flag `used_with`."""
  return setting('', f'Apache Beam pipeline options for {used_with}, as one string, e.g. '
                 '"--runner=DirectRunner --direct_num_workers=2 '
                 '--direct_running_mode=multi_processing" or a Dataflow / Flink / Spark '
                 "runner's options. Empty: Beam's DirectRunner defaults.", result=False)


def split_beam_options(text):
  """Splits a --beam_options string into its arguments (shell quoting; `--opt=value` or
  `--opt value`); raises ValueError naming the string when it does not split or an argument is
  neither an --option nor an option's value."""
  try:
    args = shlex.split(text or '')
  except ValueError as e:
    raise ValueError(f'beam_options {text!r} cannot be split into options: {e}') from None
  for i, arg in enumerate(args):
    takes_value = i > 0 and args[i - 1].startswith('--') and '=' not in args[i - 1]
    if not arg.startswith('--') and not takes_value:
      raise ValueError(f'beam_options {text!r}: {arg!r} is not an option; expected Beam pipeline '
                       'options such as --runner=DirectRunner --direct_num_workers=2')
  return args


def check_source_kind(spec):
  """Raises ValueError when the Beam labeler cannot read source `spec` (tfds:)."""
  kind = (spec or '').partition(':')[0]
  if kind and kind not in BEAM_SOURCE_KINDS:
    raise ValueError(f'source {spec!r}: runner=beam reads '
                     f'{", ".join(k + ":" for k in BEAM_SOURCE_KINDS)} sources, not {kind}:; use '
                     'runner=local, or write the data as tfrecord: shards first '
                     '(tools/make_tfrecords.py)')


def check(config):
  """Raises ValueError when config.runner / config.beam_options (and, for ns-label, shard_index
  and the source kind) do not go together: options without runner=beam, a shard_index or a tfds:
  source with runner=beam, runner=beam without Beam installed."""
  if config.runner not in RUNNERS:
    raise ValueError(f'runner must be one of {RUNNERS}, got {config.runner!r}')
  if config.beam_options and config.runner != 'beam':
    raise ValueError(f'beam_options {config.beam_options!r} are only used with runner=beam, got '
                     f'runner={config.runner!r}')
  if config.runner == 'beam' and getattr(config, 'shard_index', None) is not None:
    raise ValueError(f'shard_index={config.shard_index} with runner=beam: the Beam pipeline labels '
                     'every image and spreads the work itself; leave shard_index unset')
  split_beam_options(config.beam_options)
  if config.runner == 'beam':
    check_source_kind(getattr(config, 'unlabeled', ''))
    require_beam()


def require_beam():
  """Imports apache_beam; raises ValueError with the install command when it is missing."""
  try:
    import apache_beam  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ValueError(f'runner=beam needs Apache Beam: {INSTALL_HINT} ({e})') from None
  return apache_beam
