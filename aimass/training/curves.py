"""The training curves page (loss and accuracy per epoch) the train stage shows in the KFP UI."""
from __future__ import annotations

from aimass.reports import html_page
from aimass.training.loop import EpochRecord


def training_curves_html(history: list[EpochRecord]) -> str:
    from matplotlib.figure import Figure

    epochs = [record.epoch for record in history]
    figure = Figure(figsize=(10, 3.6))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    loss_axes.plot(epochs, [r.validation_loss for r in history], "o-", label="validation")
    loss_axes.set(title="loss", xlabel="epoch")
    accuracy_axes.plot(epochs, [r.train_accuracy for r in history], "o-", label="train")
    accuracy_axes.plot(epochs, [r.validation_accuracy for r in history], "o-", label="validation")
    accuracy_axes.set(title="accuracy", xlabel="epoch")
    for axes in (loss_axes, accuracy_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    return html_page("Training curves", figure, "Train loss includes label smoothing; validation loss does not.")
