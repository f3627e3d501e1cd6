import sys

from launch.testbed.command import main

sys.exit(main())
