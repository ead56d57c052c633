from villager_shop.cli.main import main

main()
