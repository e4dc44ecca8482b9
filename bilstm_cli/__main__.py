from bilstm_cli.cli import main

main()
