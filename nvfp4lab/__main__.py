import sys

from nvfp4lab.cli import main

sys.exit(main())
