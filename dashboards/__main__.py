import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("dashboards", sys.argv[1:]))
