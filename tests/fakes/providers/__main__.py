from tests.fakes.providers.cli import main

main()
