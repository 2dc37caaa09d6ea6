"""Deployment: the deploy stage's work (stage.py: push, release, smoke-test or canary, promote or undo) and the
smoke test of the served model over HTTP (smoke_test.py, through aimass/serving/client.py). components/deploy.py is
its KFP wrapper; the verdict on a smoke test is aimass/gates.py's."""
