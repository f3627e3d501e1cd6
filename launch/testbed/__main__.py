import sys

from launch.testbed.hosts import main

sys.exit(main())
