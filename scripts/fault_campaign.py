"""Fault campaign: ``python scripts/fault_campaign.py --trials 20`` (see docs/faults.md)."""

import sys

from ssl_speech.studies.fault_campaign import main

if __name__ == "__main__":
    sys.exit(main())
