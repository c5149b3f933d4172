from prepare.cli import cli

cli(prog_name="python -m prepare")
