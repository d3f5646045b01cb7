"""Sums a NS_TEST_CPU_LOG file (tests/conftest.py) by test file: a markdown table of CPU and wall
seconds and test counts, the most expensive file first, and the top tests.

  NS_TEST_CPU_LOG=/tmp/cpu.jsonl python -m pytest -q tests
  python tools/test_cpu_table.py /tmp/cpu.jsonl [--top=15]
"""

import argparse
import collections
import json


def file_table(rows):
  """{file: (cpu, wall, tests)} from the log's rows (dicts with test, cpu, wall)."""
  totals = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for row in rows:
    entry = totals[row['test'].split('::')[0]]
    entry[0] += row['cpu']
    entry[1] += row['wall']
    entry[2] += 1
  return {name: tuple(v) for name, v in totals.items()}


def main():
  """Prints the per-file table, then the `--top` most expensive tests."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('log', help='a file written by NS_TEST_CPU_LOG')
  parser.add_argument('--top', type=int, default=15, help='how many single tests to list')
  args = parser.parse_args()
  with open(args.log) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  table = file_table(rows)
  print('| file | tests | CPU-s | wall s |\n|---|---|---|---|')
  for name, (cpu, wall, count) in sorted(table.items(), key=lambda kv: -kv[1][0]):
    print(f'| {name} | {count} | {cpu:.1f} | {wall:.1f} |')
  total_cpu = sum(v[0] for v in table.values())
  print(f'| all | {sum(v[2] for v in table.values())} | {total_cpu:.1f} | '
        f'{sum(v[1] for v in table.values()):.1f} |\n')
  for row in sorted(rows, key=lambda r: -r['cpu'])[:args.top]:
    print(f'{row["cpu"]:8.1f} CPU-s {row["wall"]:8.1f} s  {row["test"]}')


if __name__ == '__main__':
  main()
