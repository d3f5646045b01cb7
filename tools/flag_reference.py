"""Writes docs/flags.md: the flags of every ns-* binary, generated from the binaries themselves.

Usage:
  python tools/flag_reference.py            # (re)write docs/flags.md
  python tools/flag_reference.py --check    # exit 1 if docs/flags.md is not what it would write
  python tools/flag_reference.py --json_out=FLAGS.json   # also dump the flag data (for tests)

For each binary (ns-train, ns-label, ns-filter, ns-eval, ns-export, ns-pipeline) the tool imports
its `noisy_student_tf.cli.<name>` module in one fresh Python process, one module after another,
deleting each module's flags before the next (their flag names clash: ns-train and ns-pipeline
both define --batch_size, with other helps and defaults) and lists the flags that
modules of `noisy_student_tf` define (`flags.FLAGS.flags_by_module_dict()`, so absl's own
--flagfile, --helpfull, --v ... are left out of the tables): name, type or choices, default, help.
The flags are generated from the settings dataclasses (noisy_student_tf/cli/config_flags.py), so
this page changes whenever a setting's help, default or choices does; tests/test_docs.py fails
until it is regenerated.

`collect()` returns the same data as a dict, including every flag name a binary accepts (absl's
too), which tests/test_docs.py uses to check the commands written in README.md, docs/ and flags/.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, 'docs', 'flags.md')
# Binary -> the module its console script runs (setup.py: ns-<b> = noisy_student_tf.cli.<b>:run).
BINARIES = {f'ns-{b}': f'noisy_student_tf.cli.{b}'
            for b in ('train', 'label', 'filter', 'eval', 'export', 'pipeline')}
PACKAGE = 'noisy_student_tf'
_MARK = '@@FLAG_REFERENCE@@'

# Runs in one fresh process: imports each cli module in turn, prints its flags as one JSON line,
# then deletes them (and forgets the module; its library imports stay) so that the next binary's clashing names can be
# defined.  One process instead of one per binary: TensorFlow is imported once, not six times.
_CHILD = r'''
import importlib, json, sys
from absl import app, flags
F = flags.FLAGS
package, mark = sys.argv[1], sys.argv[2]
for module_name in sys.argv[3:]:
  before = set(F)
  module = importlib.import_module(module_name)
  own = []
  for name, defined in sorted(F.flags_by_module_dict().items()):
    if not (name == package or name.startswith(package + '.')):
      continue
    for f in defined:
      if f.name in before:
        continue  # defined by an earlier binary's module and not deleted: not this one's
      choices = getattr(f.parser, 'enum_values', None)
      default = f.default
      if isinstance(default, tuple):
        default = list(default)
      own.append({'name': f.name, 'type': f.flag_type(),
                  'choices': list(choices) if choices else None, 'default': default,
                  'help': f.help, 'boolean': bool(f.boolean), 'module': name})
  if 'help' not in F:
    app.define_help_flags()  # what app.run adds: --help, --helpfull, --helpshort, --helpxml, ...
  allowed = sorted(set(F) | {'flagfile', 'undefok'})  # the parser's own (not in FLAGS)
  booleans = sorted({n for n in F if F[n].boolean})
  doc = (module.__doc__ or '').strip().split('\n')[0]
  print(mark + json.dumps({'module': module_name, 'flags': own, 'all': allowed,
                           'booleans': booleans, 'doc': doc}), flush=True)
  for f in own:  # TensorFlow's own flags, defined by the first import, stay
    delattr(F, f['name'])
  sys.modules.pop(module_name, None)
'''


def collect():
  """{binary: {'flags': [own flags, in definition order], 'all': [every accepted flag name],
  'booleans': [...], 'doc': first docstring line}}, from one fresh process that imports the
  binaries' modules one after another."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', CUDA_VISIBLE_DEVICES='')
  env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
  proc = subprocess.run([sys.executable, '-c', _CHILD, PACKAGE, _MARK, *BINARIES.values()],
                        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  found = [json.loads(l[len(_MARK):]) for l in proc.stdout.splitlines() if l.startswith(_MARK)]
  by_module = {d.pop('module'): d for d in found}
  missing = [m for m in BINARIES.values() if m not in by_module]
  if proc.returncode != 0 or missing:
    raise RuntimeError(f'importing {", ".join(missing) or "the binaries"} failed (exit '
                       f'{proc.returncode}):\n{proc.stderr[-4000:]}')
  return {b: by_module[m] for b, m in BINARIES.items()}


def _cell(text):
  return ' '.join(str(text).split()).replace('|', '\\|')


def _code(text):
  text = _cell(text)
  return f'`{text}`' if '`' not in text else text


def _default(flag):
  value = flag['default']
  if value is None:
    return 'unset'
  if isinstance(value, bool):
    return _code('true' if value else 'false')
  if isinstance(value, list):
    return _code(','.join(str(v) for v in value)) if value else "`''`"
  if value == '':
    return "`''`"
  return _code(value)


def _type(flag):
  if flag['choices']:
    return ' \\| '.join(f'`{c}`' for c in flag['choices'])
  if 'list' in flag['type']:  # absl: "comma separated list of strings"
    return 'list'
  return flag['type']


def _help(flag):
  text = flag['help'] or ''
  if flag['choices']:  # absl puts "<a|b|c>: " before an enum's help; the type column says it
    prefix = '<' + '|'.join(flag['choices']) + '>: '
    if text.startswith(prefix):
      text = text[len(prefix):]
  return _cell(text)


def _anchor(binary):
  return binary  # GitHub's anchor of a heading "ns-train" is "ns-train"


def render(data):
  """The text of docs/flags.md for `data` (as `collect()` returns it)."""
  out = ['# Flag reference', '',
         '<!-- GENERATED by tools/flag_reference.py from the binaries; do not edit by hand. -->',
         '<!-- Regenerate: python tools/flag_reference.py (tests/test_docs.py checks it). -->', '',
         'The flags each binary defines itself, generated from the settings dataclasses '
         '(`noisy_student_tf/cli/config_flags.py`). Every binary also takes absl\'s own flags '
         '(`--flagfile`, `--helpfull`, `--undefok`, `--v`, ...). A boolean `--X` is turned off '
         'with `--noX`; a list takes comma-separated values; "unset" means the flag has no value '
         'unless given. Which flag does what, with examples: [pipeline.md](pipeline.md), '
         '[training.md](training.md), [data.md](data.md), [robustness.md](robustness.md), '
         '[serving.md](serving.md).', '']
  for binary in data:
    out.append(f'- [{binary}](#{_anchor(binary)}) ({len(data[binary]["flags"])} flags)')
  out.append('')
  for binary, info in data.items():
    out += [f'## {binary}', '']
    if info['doc']:
      out += [_cell(info['doc']), '']
    out += [f'`{binary} --helpfull` (or `python -m {BINARIES[binary]} --helpfull`) prints the same '
            'list with absl\'s flags.', '',
            '| flag | type | default | help |', '|---|---|---|---|']
    for flag in info['flags']:
      out.append(f'| `--{flag["name"]}` | {_type(flag)} | {_default(flag)} | {_help(flag)} |')
    out.append('')
  return '\n'.join(out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='Exit 1 (writing nothing) if the output file differs from what it '
                           'would write.')
  parser.add_argument('--output', default=OUTPUT, help='The page to write (default docs/flags.md).')
  parser.add_argument('--json_out', default=None,
                      help='Also write the collected flag data (every binary\'s flags) here.')
  args = parser.parse_args(argv)
  data = collect()
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump(data, f, indent=1, sort_keys=True)
  text = render(data)
  if args.check:
    try:
      with open(args.output) as f:
        current = f.read()
    except FileNotFoundError:
      current = None
    if current != text:
      print(f'{os.path.relpath(args.output, ROOT)} is out of date (or missing): run '
            f'python tools/flag_reference.py', file=sys.stderr)
      return 1
    print(f'{os.path.relpath(args.output, ROOT)} is up to date')
    return 0
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  tmp = args.output + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, args.output)
  print(f'wrote {os.path.relpath(args.output, ROOT)}: '
        + ', '.join(f'{b} {len(d["flags"])}' for b, d in data.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
