"""`python -m gateway` is the `gateway` command."""
import sys

from ._cli import main

sys.exit(main())
