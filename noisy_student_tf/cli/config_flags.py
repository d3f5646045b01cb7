"""absl flags generated from the settings dataclasses (noisy_student_tf/settings.py).

`define(TrainConfig)` gives one flag per field, with the field's help, type, default and choices;
`values(TrainConfig)` reads them back as keyword arguments of the dataclass.  A prefix makes
role-specific copies (`--teacher.dropout`, `--student.dropout`, `--label.temperature`), whose
value `None` means "not given here".
"""

import dataclasses

from absl import flags

from noisy_student_tf import settings

FLAGS = flags.FLAGS


def _fields(cls, only, exclude):
  kinds = settings.field_types(cls)
  for f in dataclasses.fields(cls):
    kind, _ = kinds[f.name]
    if kind is dict or dataclasses.is_dataclass(kind):
      continue  # nested configs get their own prefixed flags
    if (only is not None and f.name not in only) or f.name in exclude:
      continue
    yield f, kind


def _default(f):
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return None


def define(cls, *, prefix='', only=None, exclude=(), defaults=None, unset=False, help_suffix='',
           flag_values=FLAGS):
  """Defines one absl flag per field of dataclass `cls` (skipping nested configs).

  prefix: put before each field name.  only / exclude: field names to define / leave out.
  defaults: {field: default} replacing the dataclass defaults.  unset: every flag defaults to None
  (means "not given"; a `defaults` entry still wins).  help_suffix: appended to every help.
  Returns the list of flag names defined.
  """
  defaults = defaults or {}
  names = []
  for f, kind in _fields(cls, only, exclude):
    name = prefix + f.name
    default = defaults.get(f.name, None if unset else _default(f))
    text = (settings.help_of(f) or f.name) + help_suffix
    choices = settings.choices_of(f)
    if kind is bool:
      flags.DEFINE_boolean(name, default, text, flag_values=flag_values)
    elif choices is not None:
      flags.DEFINE_enum(name, default, list(choices), text, flag_values=flag_values)
    elif kind is int:
      flags.DEFINE_integer(name, default, text, flag_values=flag_values)
    elif kind is float:
      flags.DEFINE_float(name, default, text, flag_values=flag_values)
    elif kind is tuple:
      flags.DEFINE_list(name, list(default) if default is not None else None, text,
                        flag_values=flag_values)
    else:
      flags.DEFINE_string(name, default, text, flag_values=flag_values)
    names.append(name)
  return names


def _convert(cls, f, kind, optional, value, flag_name):
  if kind is tuple and value is not None:
    element = settings.element_type(cls, f.name)
    try:
      return tuple(element(v) for v in value)
    except ValueError:
      raise ValueError(f'--{flag_name} must be {element.__name__} values separated by commas, got '
                       f'{",".join(value)!r}') from None
  if kind is str and optional and value == '':
    return None  # an empty string flag means "unset" for optional paths and names
  return value


def values(cls, *, prefix='', only=None, exclude=(), given_only=False, skip_none=False,
           flag_values=FLAGS):
  """Reads back the flags `define` made for `cls` as {field name: value}.

  given_only: only flags given on the command line or in a flagfile.  skip_none: leave out flags
  whose value is None (role-specific flags not given).  Raises ValueError for a list flag whose
  elements do not convert.
  """
  kinds = settings.field_types(cls)
  out = {}
  for f, kind in _fields(cls, only, exclude):
    name = prefix + f.name
    flag = flag_values[name]
    if given_only and not flag.present:
      continue
    value = _convert(cls, f, kind, kinds[f.name][1], flag.value, name)
    if skip_none and value is None:
      continue
    out[f.name] = value
  return out


def is_given(name, flag_values=FLAGS):
  """True when flag `name` was given on the command line or in a flagfile."""
  return bool(flag_values[name].present)


def define_num_cpu_devices(flag_values=FLAGS):
  """Defines --num_cpu_devices (a process setting of the binaries that train, not a config field)."""
  flags.DEFINE_integer('num_cpu_devices', 1, 'Split the CPU into this many logical devices (for '
                       '--strategy=mirrored without GPUs).', flag_values=flag_values)
