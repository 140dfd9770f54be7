"""`python -m training.pretrain --config C [--stages vae,base,export]`."""
import sys

from . import main

sys.exit(main())
