"""`python -m iwo_lite` runs the command line."""

from iwo_lite.cli import main

raise SystemExit(main())
