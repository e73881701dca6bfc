from robust_features.cli import main

raise SystemExit(main())
