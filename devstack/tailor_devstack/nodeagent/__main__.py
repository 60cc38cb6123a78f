import argparse
from pathlib import Path

from tailor_devstack.nodeagent.agent import main

parser = argparse.ArgumentParser(prog="python -m tailor_devstack.nodeagent")
parser.add_argument("--config", type=Path, required=True, help="the JSON config `make up` writes")
main(parser.parse_args().config)
