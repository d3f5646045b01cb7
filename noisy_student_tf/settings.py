"""Settings declared once: dataclass fields that carry their own help text and choices.

Every configuration of the package (TrainConfig, LabelConfig, FilterConfig, EvalConfig,
PipelineConfig ...) is a frozen dataclass whose fields are made with `setting(...)`.  The absl
binaries generate their flags from these fields (noisy_student_tf/cli/config_flags.py), so a new
setting is one line here and appears, with its help and choices, in every binary that uses it.

`result=False` marks a setting that does not change what a stage produces (log intervals, progress
display, batch sizes of evaluation ...): stage fingerprints leave it out, so changing it never
blocks a rerun.  Nothing here imports TensorFlow.
"""

import dataclasses
import hashlib
import json
import types
import typing

_HELP = 'help'
_CHOICES = 'choices'
_RESULT = 'result'


def setting(default=dataclasses.MISSING, help: str = '', *, choices=None, result=True,
            default_factory=dataclasses.MISSING):
  """A dataclass field with its flag help, allowed values and whether it shapes the output.

  default / default_factory: as dataclasses.field.  help: one line for --helpfull.
  choices: the allowed values of a str setting (its flag becomes an enum).  result: False for
  settings that do not change a stage's output (left out of fingerprints).
  Returns a dataclasses.Field.
  """
  metadata = {_HELP: help, _CHOICES: tuple(choices) if choices is not None else None,
              _RESULT: result}
  if default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=default_factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def help_of(field: dataclasses.Field) -> str:
  """The help text of a field made with `setting` ('' for plain fields)."""
  return field.metadata.get(_HELP, '')


def choices_of(field: dataclasses.Field):
  """The allowed values of a field (a tuple), or None when any value of its type goes."""
  return field.metadata.get(_CHOICES)


def shapes_result(field: dataclasses.Field) -> bool:
  """False for settings that do not change what a stage writes (see `setting`)."""
  return field.metadata.get(_RESULT, True)


def field_types(cls) -> dict:
  """{field name: (base type, optional)} of a dataclass: base type is bool, int, float, str,
  tuple (a Tuple[...] of scalars), dict, or a dataclass type for nested configs."""
  hints = typing.get_type_hints(cls)
  out = {}
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
      args = [a for a in typing.get_args(hint) if a is not type(None)]
      optional = len(args) < len(typing.get_args(hint))
      hint = args[0]
    origin = typing.get_origin(hint)
    if origin in (tuple, typing.Tuple):
      out[f.name] = (tuple, optional)
    elif origin in (dict, typing.Dict) or hint is dict or origin is typing.Mapping:
      out[f.name] = (dict, optional)
    else:
      out[f.name] = (hint, optional)
  return out


def element_type(cls, name):
  """The element type of a Tuple[...] field (float for Tuple[float, ...])."""
  hint = typing.get_type_hints(cls)[name]
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
  return typing.get_args(hint)[0]


def to_json(config) -> dict:
  """A nested config as plain JSON values (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def from_json(cls, values: dict):
  """Builds `cls` from `to_json`'s output (lists back to tuples, nested configs rebuilt); unknown
  keys raise ValueError naming them."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f'{cls.__name__} has no setting {unknown[0]!r} (settings: {sorted(names)})')
  kinds = field_types(cls)
  out = {}
  for name, value in values.items():
    kind, _ = kinds[name]
    if value is not None and dataclasses.is_dataclass(kind):
      value = from_json(kind, value)
    elif value is not None and kind is tuple:
      value = tuple(value)
    out[name] = value
  return cls(**out)


def result_settings(config, exclude=()) -> dict:
  """The settings of `config` that shape its output (JSON values), minus `exclude`."""
  values = to_json(config)
  return {f.name: values[f.name] for f in dataclasses.fields(config)
          if shapes_result(f) and f.name not in exclude}


def digest(values) -> str:
  """A short stable hash of JSON-able values."""
  text = json.dumps(values, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_choices(config):
  """Raises ValueError naming the first str setting of `config` whose value is not one of its
  choices."""
  for f in dataclasses.fields(config):
    allowed = choices_of(f)
    value = getattr(config, f.name)
    if allowed is not None and value is not None and value not in allowed:
      raise ValueError(f'{f.name} must be one of {allowed}, got {value!r}')
