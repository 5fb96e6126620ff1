import sys

from yolocompress.cli import main

sys.exit(main())
