"""On-server agent of the express notification service (SPEC 5, 5.1).

Collectors read the server's own fault sources (IPMI SEL, SMART, md RAID,
EDAC, lm-sensors) and turn each new condition into one SPEC 3.1 report.
Every report is written to a SQLite spool first and leaves it only when a
channel has taken it (MQTT PUBACK, SMTP 250, serial ACK); the channels are
tried in the order MQTT, SMTP, dial-up.  See docs/agent.md.
"""

from __future__ import annotations

__version__ = "0.1.0"
