"""`python -m proxy` is the same program as the `envelope-proxy` console script."""

from proxy.cli import main

raise SystemExit(main())
