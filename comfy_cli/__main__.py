from comfy_cli.cli import main

main()
