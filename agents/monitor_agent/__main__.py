"""`python -m monitor_agent` = the `monitor-agent` console script."""

from __future__ import annotations

import sys

from monitor_agent.cli import main

sys.exit(main())
