"""ns-filter: not yet implemented (filled in by its issue)."""

import sys


def run():
  """Console-script entry point."""
  sys.exit('ns-filter is not implemented yet')
