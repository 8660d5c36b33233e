import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("sim", sys.argv[1:]))
