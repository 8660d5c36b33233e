import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("edge", sys.argv[1:]))
