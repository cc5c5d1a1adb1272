from veilstream.node.cli import main

main()
