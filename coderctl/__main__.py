from coderctl.cli import main

main()
