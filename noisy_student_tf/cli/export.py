"""ns-export: not yet implemented (filled in by its issue)."""

import sys


def run():
  """Console-script entry point."""
  sys.exit('ns-export is not implemented yet')
