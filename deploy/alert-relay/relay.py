#!/usr/bin/env python3
"""Relays Nexus Routines notifications to a Prometheus Alertmanager.

A `webhook` notification channel POSTs here; the relay checks the Standard Webhooks signature
with the channel's secret, turns the event into one Alertmanager alert and posts it to
ALERTMANAGER_URL (/api/v2/alerts). Alertmanager then routes it like any other alert (PagerDuty,
Opsgenie, e-mail, ...). Needs Python 3.9+ and `pip install standardwebhooks`.

    NEXUS_CHANNEL_SECRET=whsec_... ALERTMANAGER_URL=http://alertmanager:9093 \
        python3 relay.py --port 9100

Answers 204 once Alertmanager accepted the alert, 401 for a bad signature and 502 when
Alertmanager did not answer: Nexus retries a 502 with the same webhook-id for a day.
"""

import argparse
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SEVERITY = {
    "run.failed": "warning",
    "run.missed": "warning",
    "routine.paused_on_failures": "critical",
    "wakeup.failed": "warning",
    "routine.recovered": "info",
    "test": "info",
}


def alert(event):
    """One Alertmanager alert for a notification body {type, timestamp, data}."""
    data = event.get("data", {})
    routine = data.get("routine") or {}
    run = data.get("run") or {}
    labels = {
        "alertname": "NexusRoutines_" + event["type"].replace(".", "_"),
        "severity": SEVERITY.get(event["type"], "warning"),
        "company_id": data.get("companyId", ""),
    }
    if routine.get("id"):
        labels["routine_id"] = routine["id"]
    annotations = {
        "summary": f"{event['type']}: {routine.get('title', 'Nexus Routines')}",
        "description": run.get("failureReason") or run.get("reason") or "",
        "run_id": run.get("id", ""),
    }
    return {"labels": labels, "annotations": annotations, "startsAt": event["timestamp"]}


class Relay(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = Webhook(os.environ["NEXUS_CHANNEL_SECRET"]).verify(body, dict(self.headers))
        except WebhookVerificationError:
            self.send_response(401)
            self.end_headers()
            return
        request = urllib.request.Request(
            os.environ["ALERTMANAGER_URL"].rstrip("/") + "/api/v2/alerts",
            data=json.dumps([alert(event)]).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except OSError:
            self.send_response(502)
            self.end_headers()
            return
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args()
    ThreadingHTTPServer((args.bind, args.port), Relay).serve_forever()
