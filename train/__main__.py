from train.cli import cli

cli(prog_name="python -m train")
