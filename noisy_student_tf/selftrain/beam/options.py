"""--beam_options: Beam's own pipeline options, passed through as one string."""

from apache_beam.options import pipeline_options as beam_options

from noisy_student_tf.selftrain.beam import runner_settings


def _option_name(arg):
  return arg[2:].split('=', 1)[0].replace('-', '_')


def pipeline_options(text):
  """Beam PipelineOptions from a --beam_options string ('' gives the DirectRunner defaults).

  Raises ValueError naming an option Beam does not know (Beam itself would only warn and drop
  it, so a misspelt --direct_num_workers would silently run on one worker).
  """
  args = runner_settings.split_beam_options(text)
  options = beam_options.PipelineOptions(args)
  known = options.get_all_options(drop_default=False)
  names = [a for a in args if a.startswith('--')]
  unknown = [a for a in names if _option_name(a) not in known and
             not (_option_name(a).startswith('no') and _option_name(a)[2:] in known)]
  if unknown:
    raise ValueError(f'beam_options {text!r}: Beam knows no option {unknown[0]!r} (see '
                     '`python -m apache_beam.examples.wordcount --help` for the options)')
  return options
