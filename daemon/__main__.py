import sys

from distilld.daemon.cli import main

sys.exit(main())
