from inference_sim.cli.main import main

main()
