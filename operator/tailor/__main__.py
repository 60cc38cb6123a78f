from tailor.main import main

main()
