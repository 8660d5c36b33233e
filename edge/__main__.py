import sys

from edge.cli import main

raise SystemExit(main(sys.argv[1:]))
