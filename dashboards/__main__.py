import sys

from dashboards.cli import main

raise SystemExit(main(sys.argv[1:]))
