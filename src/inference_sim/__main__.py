from inference_sim.cli import main

main()
