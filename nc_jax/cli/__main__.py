import sys

from nc_jax.cli import main

sys.exit(main())
