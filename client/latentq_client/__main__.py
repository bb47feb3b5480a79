import sys

from latentq_client.cli import main

sys.exit(main())
