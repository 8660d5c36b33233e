from tillpulse.cli import main

raise SystemExit(main())
