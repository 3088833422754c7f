from comfy_cli.entry import main

main()
