from facewatch.cli import main

raise SystemExit(main())
