from lightspan.cli import main

raise SystemExit(main())
