"""Training a classifier: the fit loop and its devices, batches and ranks, the train stage's work (`stage.train`),
data-parallel processes (`distributed`), a PyTorchJob across nodes (`operator_job`) and the hyper-parameter search
(`hpo`). Nothing here imports KFP: components/train.py and components/hpo.py are the thin wrappers."""
