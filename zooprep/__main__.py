"""``python -m zooprep`` runs the command line."""

from zooprep.cli import main

main()
