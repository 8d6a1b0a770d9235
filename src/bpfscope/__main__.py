"""`python -m bpfscope`: the `bpfscope` command."""

import sys

from .cli.main import main

sys.exit(main())
