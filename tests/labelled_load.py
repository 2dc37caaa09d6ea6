"""A bounded load of labelled requests over real HTTP, for the canary tests."""
import threading

import httpx

from aimass.serving.client import tensor_request


class LabelledLoad:
    """Clients sending one image per request, each answered request labelled at once through
    the feedback endpoint; every answer is kept (status and the version that made it)."""

    def __init__(self, url, model, images, labels, class_names, clients=4):
        self.url, self.model = url, model
        self.images, self.labels, self.class_names = images, labels, class_names
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(number,)) for number in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, number):
        with httpx.Client(timeout=30) as client:
            sent = 0
            while not self._stop.is_set():
                index = (number * 7919 + sent) % len(self.images)
                request_id = f"load-{number}-{sent}"
                sent += 1
                image = self.images[index:index + 1]
                response = client.post(f"{self.url}/v2/models/{self.model}/infer",
                                       json=tensor_request(image, request_id))
                self.answers.append((response.status_code, response.headers.get("x-model-version")))
                if response.status_code == 200:
                    client.post(f"{self.url}/v2/models/{self.model}/feedback",
                                json={"id": request_id, "label": self.class_names[self.labels[index]]})

    def failures(self):
        return [status for status, _ in self.answers if status != 200]
