from trafficsearch.cli import main

main()
