from pyro_zoo.cli import main

raise SystemExit(main())
