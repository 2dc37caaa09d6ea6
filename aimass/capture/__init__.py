"""Capture: what the served model is asked and answers, and the labels that come back for it.

    records.py  the record formats (a captured request, a label) and their JSON lines
    store.py    where records live: a folder or an S3 prefix, one file per replica and interval
    writer.py   the server's background writer, which a request never waits for
    feedback.py labels imported in bulk (`aimass feedback import`)
"""
