import sys

from broker.cli import main

raise SystemExit(main(sys.argv[1:]))
