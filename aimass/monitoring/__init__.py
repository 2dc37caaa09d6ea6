"""Monitoring: is the served model still seeing what it was trained on, and is it still right?

    mmd.py        the kernel two-sample test on the model's outputs
    drift.py      a window of traffic against the model's training profile and reference outputs: one measurement
                  for the server and for `aimass monitor`, with data validation's statistics and distances
    reference.py  the reference outputs kept with a model when it is registered
    live.py       the server's sliding window, the join of labels to predictions, and their Prometheus gauges
    report.py     `aimass monitor`: the same measurement over the capture store, per model version, as HTML and JSON
    retrain.py    the response to a breach: a new data version and a retraining run, with the reason in lineage
"""
