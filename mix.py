"""Mix and master stems to a style: `python mix.py --stems a.wav b.wav --style rock_punk --output out.wav`."""

import sys

from automix.cli.mix import cli

if __name__ == "__main__":
    sys.exit(cli())
