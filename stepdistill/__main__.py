from stepdistill.entry import main

main()
