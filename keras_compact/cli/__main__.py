import sys

from keras_compact.cli.main import main

sys.exit(main())
