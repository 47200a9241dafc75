from refocusd.daemon.cli import main

main()
