"""`python -m trafficsearch ...`: the same command line as the `trafficsearch` script."""

from trafficsearch.cli import main

main()
