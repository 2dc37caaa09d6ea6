"""Canary releases judged on model quality (`aimass release canary`).

    plan.py      the canary's state as the release history records it, the weight steps, and the routing of a
                 request to a version by its id
    traffic.py   the server's part: the background (shadow) answers of the other model and the per-version
                 counters every check is computed from
    analysis.py  one step's window of those counters, judged: errors, latency, agreement, live accuracy, drift
    controller.py  the steps, one release revision each, until promotion or abort; resumable from the history
"""
