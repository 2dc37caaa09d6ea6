"""Inference scheduling: forward passes on worker threads, with greedy dynamic batching of concurrent requests."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from aimass.config import ServingConfig
from aimass.serving.metrics import ServerMetrics
from aimass.serving.holder import ModelHolder
from aimass.serving.model import ServedModel


class Predictor:
    """Runs forward passes on worker threads (torch releases the GIL), optionally merging concurrent requests."""

    def __init__(self, holder: ModelHolder, settings: ServingConfig, metrics: ServerMetrics):
        self.holder = holder
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="aimass-inference",
                                           initializer=torch.set_num_threads, initargs=(1,))
        self.batching = settings.dynamic_batching
        self.max_batch_size = settings.max_batch_size
        self.max_delay = settings.max_batch_delay_ms / 1000
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None

    async def predict(self, images: np.ndarray, served: ServedModel | None = None) -> tuple[ServedModel, np.ndarray]:
        """`served`: the model to answer with (a canary routes by request); None: the current one, read once, so
        a swap during this request does not affect it."""
        served = served or self.holder.current
        if not self.batching:
            self.metrics.batch_size.observe(len(images))
            probabilities = await asyncio.get_running_loop().run_in_executor(self.executor, served.predict, images)
            return served, probabilities
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.create_task(self._merge_requests())
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((images, answer, served))
        return await answer

    async def _merge_requests(self) -> None:
        """Greedy batching: take every request that arrived while the previous forward pass ran, as long as the
        batch stays within `max_batch_size` images (a request that would overflow it opens the next batch; one
        request larger than the limit goes alone), so a lone request never waits; `max_batch_delay_ms` > 0
        additionally waits for company."""
        loop = asyncio.get_running_loop()
        carried = None  # the request that did not fit into the previous batch
        while True:
            pending = [carried or await self._queue.get()]
            carried = None
            count = len(pending[0][0])  # images
            deadline = loop.time() + self.max_delay
            while count < self.max_batch_size:
                if not self._queue.empty():
                    candidate = self._queue.get_nowait()
                elif self.max_delay > 0 and loop.time() < deadline:
                    try:
                        candidate = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                if count + len(candidate[0]) > self.max_batch_size:
                    carried = candidate
                    break
                pending.append(candidate)
                count += len(candidate[0])
            # During a canary a batch holds requests for two models: one forward pass for each.
            by_model: dict[int, list] = {}
            for request in pending:
                by_model.setdefault(id(request[2]), []).append(request)
            for group in by_model.values():
                await self._answer_group(loop, group)

    async def _answer_group(self, loop, group: list) -> None:
        served = group[0][2]
        merged = np.concatenate([images for images, _, _ in group])
        self.metrics.batch_size.observe(len(merged))
        try:
            probabilities = await loop.run_in_executor(self.executor, served.predict, merged)
        # Inputs were validated, so this is the model's fault: fail these requests, keep the batcher alive.
        except Exception as error:  # noqa: BLE001
            for _, answer, _ in group:
                if not answer.done():  # a client that went away cancelled its future already
                    answer.set_exception(error)
            return
        start = 0
        for images, answer, _ in group:
            if not answer.done():
                answer.set_result((served, probabilities[start:start + len(images)]))
            start += len(images)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

