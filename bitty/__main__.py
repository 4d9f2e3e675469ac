from bitty.cli import main

raise SystemExit(main())
