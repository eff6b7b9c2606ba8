from synchook.fakes.cli import main

main()
