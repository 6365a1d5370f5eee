"""Run the validation suite: `python validate.py --quick --output report.json` (see README.md)."""

import sys

from automix.cli.validate import cli

if __name__ == "__main__":
    sys.exit(cli())
