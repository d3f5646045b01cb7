"""The documentation says what the code does: README.md (a front page) and docs/*.md.

- docs/flags.md is what tools/flag_reference.py writes from the binaries (`--check`);
- every `--flag` in a command line of README.md or docs/*.md for a named binary (`ns-pipeline ...`,
  `ns-train ...`, `python -m noisy_student_tf.cli.X ...`, backslash continuations joined, inline
  code spans too), and every flag of flags/*.cfg (the recipe's lines and the commands in its
  header), is a flag of that binary, with the flag sets the tool collects;
- every relative markdown link points to an existing file;
- the README stays a front page (at most README_MAX_LINES lines) and its quick start keeps the two
  commands, the second being the test command `.ci/run` runs;
- the flag names replaced by the settings refactor (issue 14) appear nowhere in the docs.

The flag sets come from one run of the tool (a fresh process per binary; ~10 s of CPU each), shared
by the tests of this file.  The parsers are tested on small made-up pages too, so that a checker
that silently finds nothing cannot pass.
"""

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'flag_reference.py'
README_MAX_LINES = 230
QUICK_START = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
    "ns-pipeline --flagfile=flags/demo.cfg --work_dir=/tmp/ns-demo",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
    "python -m pytest -q tests",
)
CI_TEST_COMMAND = "pip install -e '.[test]' && python -m pytest -q tests"  # .ci/run's (less -q)
# ns-pipeline flags renamed in issue 14 that no binary defines any more (ns-label's --label_type,
# --temperature, --top_k and ns-filter's --threshold, --per_class, --duplicate are still theirs).
OLD_FLAGS = ('teacher_steps', 'teacher_epochs', 'teacher_dropout', 'student_steps',
             'student_epochs', 'student_learning_rate', 'student_randaug_layers',
             'student_randaug_magnitude', 'student_randaug', 'student_dropout',
             'student_drop_path_rate', 'label_shards', 'label_batch_size', 'filter_shards')


def _load_tool():
  spec = importlib.util.spec_from_file_location('flag_reference', TOOL)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


flag_reference = _load_tool()
BINARIES = tuple(flag_reference.BINARIES)  # ns-train, ns-label, ...
_MODULE_TO_BINARY = {m: b for b, m in flag_reference.BINARIES.items()}


def doc_files():
  return [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))


def recipe_files():
  return sorted((REPO / 'flags').glob('*.cfg'))


# ---------------------------------------------------------------------------------------------
# Parsing commands out of markdown and flagfiles.

_FENCE = re.compile(r'^\s*(```|~~~)')
_INLINE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
_BINARY = re.compile(r'(?:^|(?<=[\s;&|(`"\'$]))(?:(ns-(?:%s))|python3? -m (noisy_student_tf\.cli\.'
                     r'\w+))(?=\s|$)' % '|'.join(b[3:] for b in BINARIES))
_FLAG = re.compile(r'(?<![\w.\-])--([A-Za-z_][\w.]*)')
_FLAGFILE = re.compile(r'--flagfile=(?:\S*/)?flags/([\w.-]+\.cfg)')


def _join_continuations(lines):
  """[(first line number, logical line)]: lines ending in a backslash joined with the next."""
  out, buffer, start = [], [], None
  for number, line in lines:
    if start is None:
      start = number
    if line.rstrip().endswith('\\'):
      buffer.append(line.rstrip()[:-1])
      continue
    buffer.append(line)
    out.append((start, ' '.join(buffer)))
    buffer, start = [], None
  if buffer:
    out.append((start, ' '.join(buffer)))
  return out


def _strip_comment(line):
  """The line without a shell comment (a # at the start or after a blank, outside quotes)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


def _segments(line):
  """The parts of a shell line between &&, ||, ; and pipes (a | inside [...] is an alternative
  of an optional flag, as in `[--a=x | --b=y]`, not a pipe)."""
  parts, current, depth, i = [], [], 0, 0
  while i < len(line):
    ch = line[i]
    if ch == '[':
      depth += 1
    elif ch == ']':
      depth = max(0, depth - 1)
    if line.startswith(('&&', '||'), i) or ch == ';' or (ch == '|' and depth == 0):
      parts.append(''.join(current))
      current = []
      i += 2 if line.startswith(('&&', '||'), i) else 1
      continue
    current.append(ch)
    i += 1
  parts.append(''.join(current))
  return parts


def commands_in_line(line):
  """[(binary, [flag names], command text)] of the named-binary commands in one logical shell
  line."""
  out = []
  for segment in _segments(_strip_comment(line)):
    match = _BINARY.search(segment)
    if not match:
      continue
    binary = match.group(1) or _MODULE_TO_BINARY.get(match.group(2))
    if binary is None:
      continue
    rest = segment[match.end():]
    out.append((binary, _FLAG.findall(rest), rest))
  return out


def markdown_commands(text):
  """[(line number, binary, [flags], command text)] of the commands in fenced code blocks
  (continuations joined) and in inline code spans of `text`."""
  code, prose, fenced = [], [], False
  for number, line in enumerate(text.split('\n'), 1):
    if _FENCE.match(line):
      fenced = not fenced
      continue
    (code if fenced else prose).append((number, line))
  out = []
  for number, line in _join_continuations(code):
    out += [(number, *command) for command in commands_in_line(line)]
  for number, line in prose:
    for span in _INLINE.findall(line):
      out += [(number, *command) for command in commands_in_line(span.replace('\\|', '|'))]
  return out


def recipe_flags(text):
  """[(line number, flag name)] of a flagfile's own lines (`--name=value`, `--noname`)."""
  out = []
  for number, line in enumerate(text.split('\n'), 1):
    line = line.strip()
    if line.startswith('--'):
      out.append((number, line[2:].split('=', 1)[0]))
  return out


def recipe_header_commands(text):
  """[(line number, binary, [flags], command text)] of the commands in a flagfile's comments."""
  lines = [(n, line.lstrip()[1:]) for n, line in enumerate(text.split('\n'), 1)
           if line.lstrip().startswith('#')]
  out = []
  for number, line in _join_continuations(lines):
    out += [(number, *command) for command in commands_in_line(line)]
  return out


def unknown(binary, names, flag_sets):
  """The names that are not flags of `binary` (a boolean's --noX counts as X)."""
  known, booleans = set(flag_sets[binary]['all']), set(flag_sets[binary]['booleans'])
  return [n for n in names
          if n not in known and not (n.startswith('no') and n[2:] in booleans)]


_LINK = re.compile(r'(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)|!\[[^\]\n]*\]\(([^)\s]+)\)')


def anchors(text):
  """The anchors GitHub gives the headings of markdown `text` (lower case, punctuation dropped,
  blanks to hyphens, -1, -2 ... for repeats), code blocks left out."""
  out, counts = set(), {}
  for line in re.sub(r'```.*?```', '', text, flags=re.S).split('\n'):
    match = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
    if not match:
      continue
    slug = re.sub(r'[^\w\- ]', '', match.group(1).lower()).replace(' ', '-')
    n = counts.get(slug, 0)
    counts[slug] = n + 1
    out.add(slug if n == 0 else f'{slug}-{n}')
  return out


def broken_links(path, text):
  """[(target)] of relative links in markdown `text` (file `path`) whose file does not exist, or
  whose #anchor is no heading of the markdown file it names."""
  code_free = re.sub(r'```.*?```', '', text, flags=re.S)  # no links inside code blocks
  out = []
  for match in _LINK.finditer(code_free):
    target = match.group(1) or match.group(2)
    if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):
      continue  # http:, https:, mailto:, ...
    file_part, _, anchor = target.partition('#')
    if not file_part:  # an anchor of this page
      if anchor not in anchors(text):
        out.append(target)
      continue
    file = path.parent / file_part
    if not file.exists():
      out.append(target)
    elif anchor and file.suffix == '.md' and anchor not in anchors(file.read_text()):
      out.append(target)
  return out


def readme_problems(text, ci_script):
  """What keeps `text` from being the front page (empty when it is one)."""
  problems = []
  lines = text.split('\n')
  count = len(text.rstrip('\n').split('\n'))
  if count > README_MAX_LINES:
    problems.append(f'README.md has {count} lines, more than {README_MAX_LINES}: move reference '
                    'text into docs/')
  if '## Quick start' not in lines:
    problems.append('README.md has no "## Quick start" section')
  else:
    start = lines.index('## Quick start')
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
    section = lines[start:end]
    for command in QUICK_START:
      if command not in section:
        problems.append(f'the quick start lost its command (a line exactly): {command}')
  if not QUICK_START[1].endswith(CI_TEST_COMMAND):
    problems.append('the second quick-start command is not the test command of .ci/run')
  ci_lines = [re.sub(r'pip install (?:-q |--quiet )+', 'pip install ', line.strip())
              for line in ci_script.split('\n') if 'pytest' in line and not line.startswith('#')]
  if CI_TEST_COMMAND not in ci_lines:
    problems.append(f'.ci/run no longer runs {CI_TEST_COMMAND!r} (pip quiet flags aside): '
                    f'{ci_lines}')
  return problems


# ---------------------------------------------------------------------------------------------
# The flag sets, from one run of the tool.

@pytest.fixture(scope='module')
def tool_run(tmp_path_factory):
  """(the `--check` process, the flag data it collected) from one run of tools/flag_reference.py."""
  out = tmp_path_factory.mktemp('flag_reference') / 'flags.json'
  proc = subprocess.run([sys.executable, str(TOOL), '--check', f'--json_out={out}'],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  data = json.loads(out.read_text()) if out.exists() else None
  return proc, data


@pytest.fixture(scope='module')
def flag_sets(tool_run):
  proc, data = tool_run
  assert data is not None, f'tools/flag_reference.py collected nothing:\n{proc.stderr[-3000:]}'
  assert sorted(data) == sorted(BINARIES)
  return data


def test_flags_md_is_up_to_date(tool_run):
  proc, _ = tool_run
  assert proc.returncode == 0, (
      f'{proc.stderr[-3000:]}\ndocs/flags.md is stale: run python tools/flag_reference.py')


def test_tool_lists_every_console_script():
  setup = (REPO / 'setup.py').read_text()
  names = re.search(r'BINARIES = \[([^\]]*)\]', setup).group(1)
  assert sorted(f'ns-{b}' for b in re.findall(r"'(\w+)'", names)) == sorted(BINARIES)


def test_flags_md_tables_hold_every_own_flag(flag_sets):
  text = (REPO / 'docs' / 'flags.md').read_text()
  for binary, info in flag_sets.items():
    section = text.split(f'\n## {binary}\n', 1)[1].split('\n## ', 1)[0]
    rows = re.findall(r'^\| `--([\w.]+)` \|', section, re.M)
    assert rows == [f['name'] for f in info['flags']], binary
    assert len(rows) > 5, binary
  assert {'teacher.train_steps', 'student.epochs', 'label.num_shards', 'filter.threshold',
          'restart_from'} <= {f['name'] for f in flag_sets['ns-pipeline']['flags']}


def test_commands_in_readme_and_docs_use_flags_of_their_binary(flag_sets):
  bad, seen = [], {}
  for path in doc_files():
    for number, binary, names, _ in markdown_commands(path.read_text()):
      seen[binary] = seen.get(binary, 0) + 1
      for name in unknown(binary, names, flag_sets):
        bad.append(f'{path.relative_to(REPO)}:{number}: {binary} has no flag --{name}')
  assert not bad, '\n'.join(bad)
  assert set(seen) == set(BINARIES), f'commands found per binary: {seen}'


def test_recipes_use_flags_of_their_binary(flag_sets):
  """Each flags/*.cfg: its binary (from a command in its header or in the docs that runs it), its
  own lines and the commands in its header."""
  runs = {}  # recipe file name -> the binaries commands run it with
  for path in doc_files():
    for _, binary, _, command in markdown_commands(path.read_text()):
      for cfg in _FLAGFILE.findall(command):
        runs.setdefault(cfg, set()).add(binary)
  bad = []
  for path in recipe_files():
    text = path.read_text()
    binaries = set(runs.get(path.name, set()))
    for number, binary, names, command in recipe_header_commands(text):
      if path.name in _FLAGFILE.findall(command):
        binaries.add(binary)
      for name in unknown(binary, names, flag_sets):
        bad.append(f'flags/{path.name}:{number}: (header) {binary} has no flag --{name}')
    if len(binaries) != 1:
      bad.append(f'flags/{path.name}: run by {sorted(binaries) or "no binary"} in its header and '
                 'the docs (write one `ns-X --flagfile=flags/NAME.cfg ...` command)')
      continue
    binary = binaries.pop()
    for number, name in recipe_flags(text):
      if unknown(binary, [name], flag_sets):
        bad.append(f'flags/{path.name}:{number}: {binary} has no flag --{name}')
  assert not bad, '\n'.join(bad)


def test_flagfiles_named_in_commands_exist():
  bad = []
  for path in doc_files() + recipe_files():
    for number, line in enumerate(path.read_text().split('\n'), 1):
      for cfg in re.findall(r'--flagfile=(flags/[\w.-]+)', line):
        if not (REPO / cfg).exists():
          bad.append(f'{path.relative_to(REPO)}:{number}: {cfg} does not exist')
  assert not bad, '\n'.join(bad)


def test_relative_links_point_to_files():
  bad = []
  for path in doc_files():
    bad += [f'{path.relative_to(REPO)}: {t}' for t in broken_links(path, path.read_text())]
  assert not bad, '\n'.join(bad)
  linked = set(re.findall(r'\]\((docs/[\w-]+\.md)', (REPO / 'README.md').read_text()))
  pages = {f'docs/{p.name}' for p in (REPO / 'docs').glob('*.md')}
  assert pages <= linked, f'pages the README does not link: {sorted(pages - linked)}'


def test_readme_is_a_front_page_with_the_quick_start():
  problems = readme_problems((REPO / 'README.md').read_text(), (REPO / '.ci' / 'run').read_text())
  assert not problems, '\n'.join(problems)


def test_no_renamed_flag_names_in_the_docs():
  pattern = re.compile(r'--(%s)\b(?![.\w])' % '|'.join(OLD_FLAGS))
  bad = []
  for path in doc_files():
    for number, line in enumerate(path.read_text().split('\n'), 1):
      bad += [f'{path.relative_to(REPO)}:{number}: --{m}' for m in pattern.findall(line)]
  assert not bad, 'renamed in issue 14 (see docs/pipeline.md):\n' + '\n'.join(bad)


# ---------------------------------------------------------------------------------------------
# The checkers themselves, on made-up pages: each must find what is wrong.

FAKE_FLAGS = {'ns-train': {'all': ['model_dir', 'flip', 'flagfile'], 'booleans': ['flip']},
              'ns-pipeline': {'all': ['work_dir', 'student.epochs'], 'booleans': []}}


def test_command_checker_finds_unknown_flags():
  page = '\n'.join([
      'Text `ns-train --model_dir=m --nope` and `--not_a_command` in prose.',
      '```sh',
      '# a comment: ns-train --in_comment',
      'ns-train --flagfile=flags/x.cfg --model_dir=/m \\',
      '    --noflip --bogus=1   # trailing --comment',
      'ns-pipeline --work_dir=W --student.epochs=3 --student_epochs=3 | grep --color x',
      'ns-train --model_dir=a [--flip | --wrong]',
      'python -m noisy_student_tf.cli.pipeline --work_dir=W --teacher_steps=5',
      'docker run --rm tensorflow/serving --model_config_file=x',
      '```',
  ])
  found = [(n, b, unknown(b, f, FAKE_FLAGS)) for n, b, f, _ in markdown_commands(page)]
  assert [(n, b, u) for n, b, u in found if u] == [
      (4, 'ns-train', ['bogus']), (6, 'ns-pipeline', ['student_epochs']),
      (7, 'ns-train', ['wrong']), (8, 'ns-pipeline', ['teacher_steps']),
      (1, 'ns-train', ['nope'])]


def test_recipe_parsers_find_flags_and_header_commands():
  cfg = ('# run: ns-pipeline --flagfile=flags/r.cfg --work_dir=W \\\n'
         '#     --label_shards=2\n--student.epochs=3\n--noflip\n# --not_a_line\n')
  assert recipe_flags(cfg) == [(3, 'student.epochs'), (4, 'noflip')]
  [(number, binary, names, command)] = recipe_header_commands(cfg)
  assert (number, binary, names) == (1, 'ns-pipeline', ['flagfile', 'work_dir', 'label_shards'])
  assert _FLAGFILE.findall(command) == ['r.cfg']
  assert unknown('ns-pipeline', ['label_shards', 'noflip'], FAKE_FLAGS) == ['label_shards',
                                                                            'noflip']


def test_link_checker_finds_missing_files(tmp_path):
  (tmp_path / 'there.md').write_text('# Top\n## The `--x` flag: A, b\n## Part\n## Part\n')
  page = ('# Top\n[ok](there.md) [ok](there.md#part-1) [ok](there.md#the---x-flag-a-b) '
          '[web](https://example.com/x) [anchor](#top)\n'
          '[gone](missing.md) ![img](gone.png) [no such part](there.md#nowhere) [self](#nope)\n'
          '```\n[in code](nowhere.md)\n# not a heading\n```\n')
  assert broken_links(tmp_path / 'page.md', page) == ['missing.md', 'gone.png',
                                                       'there.md#nowhere', '#nope']


def test_readme_checker_finds_a_long_page_and_a_changed_quick_start():
  ci = f'#!/bin/sh\n{CI_TEST_COMMAND}\n'
  good = '# t\n\n## Quick start\n\n```sh\n' + '\n'.join(QUICK_START) + '\n```\n\n## Next\n'
  assert readme_problems(good, ci) == []
  long = good + 'line\n' * README_MAX_LINES
  assert 'more than' in readme_problems(long, ci)[0]
  changed = good.replace('pytest -q tests', 'pytest tests')
  assert 'lost its command' in readme_problems(changed, ci)[0]
  assert '.ci/run' in readme_problems(good, '#!/bin/sh\npytest -x tests\n')[0]
  assert readme_problems(good, "pip install -q -e '.[test]' && python -m pytest -q tests\n") == []
