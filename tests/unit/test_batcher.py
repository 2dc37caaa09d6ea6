"""The dynamic batcher of the model server: batch size limits and failures, against a recording stand-in model."""
import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from aimass.config import ServingConfig
from aimass.serving import Predictor, ServerMetrics


class FakeModel:
    """Stands in for a served model: records each forward pass's batch size, and can fail or be slow."""

    def __init__(self, fail: bool = False, seconds: float = 0.0):
        self.batches: list[int] = []
        self.fail, self.seconds = fail, seconds

    def predict(self, images: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.seconds)
        self.batches.append(len(images))
        if self.fail:
            raise RuntimeError("forward pass failed")
        return np.tile(images.reshape(len(images), -1)[:, :1].astype(np.float32), (1, 2))


def predictor(model: FakeModel, **settings) -> Predictor:
    holder = SimpleNamespace(current=model)
    return Predictor(holder, ServingConfig(**settings), ServerMetrics())


def images(count: int, value: int = 0) -> np.ndarray:
    return np.full((count, 1, 2, 2), value, dtype=np.uint8)


def test_multi_image_requests_never_push_a_forward_pass_past_the_batch_size():
    model = FakeModel(seconds=0.01)
    batcher = predictor(model, max_batch_size=4)

    async def run():
        answers = await asyncio.gather(*[batcher.predict(images(3, value)) for value in range(6)])
        batcher.close()
        return answers

    answers = asyncio.run(run())
    assert max(model.batches) <= 4 and sum(model.batches) == 18
    assert [float(probabilities[0, 0]) for _, probabilities in answers] == [0, 1, 2, 3, 4, 5]  # each its own


def test_a_request_larger_than_the_batch_size_is_answered_alone():
    model = FakeModel()
    batcher = predictor(model, max_batch_size=4)

    async def run():
        _, probabilities = await batcher.predict(images(10))
        batcher.close()
        return probabilities

    assert len(asyncio.run(run())) == 10 and model.batches == [10]


def test_a_failed_forward_pass_with_a_departed_client_leaves_the_batcher_answering():
    model = FakeModel(fail=True, seconds=0.05)
    batcher = predictor(model, max_batch_size=8)

    async def run():
        departed = asyncio.ensure_future(batcher.predict(images(1)))
        waiting = asyncio.ensure_future(batcher.predict(images(1)))
        await asyncio.sleep(0.01)  # both are in the batch being computed
        departed.cancel()
        with pytest.raises(RuntimeError, match="forward pass failed"):
            await waiting
        model.fail = False
        answer = await asyncio.wait_for(batcher.predict(images(2, 7)), timeout=5)  # the batcher is still alive
        batcher.close()
        return answer

    _, probabilities = asyncio.run(run())
    assert probabilities[:, 0].tolist() == [7, 7]
