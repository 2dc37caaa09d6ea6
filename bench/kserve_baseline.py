"""The serving benchmark's baseline: KServe's stock ModelServer serving an aimass model directory.

The model class is what KServe's docs ask for (a `kserve.Model` with `load()` and `predict()`); it answers the same
OIP v2 requests as `aimass serve` with the same outputs: a tensor (`images`), or encoded image files (`image`,
BYTES, base64 in JSON) decoded and preprocessed by the same function aimass uses; and it runs the same forward pass
(aimass's ServedModel).
Every ModelServer option keeps its default except the ports, so this is KServe as shipped.

    python bench/kserve_baseline.py --model_dir DIR --http_port 8090 --grpc_port 8091
"""
import argparse
import base64
import uuid
from pathlib import Path

import kserve
import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse, ModelServer, model_server

from aimass.data.preprocess import decode_uploads
from aimass.serving import ServedModel, load_served_model

MODEL_NAME = "fashion-mnist-classifier"


class ImageClassifier(kserve.Model):
    def __init__(self, name: str, model_dir: Path):
        super().__init__(name)
        self.model_dir = model_dir
        self.served: ServedModel | None = None
        self.load()

    def load(self) -> bool:
        self.served = load_served_model(self.name, "v1", None, self.model_dir)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        tensor = payload.inputs[0]
        if tensor.name == "image":
            files = tuple(base64.b64decode(item) for item in tensor.as_numpy().ravel())
            images = decode_uploads(files, self.served.input_spec)
        else:
            images = tensor.as_numpy().astype(np.uint8).reshape(-1, *self.served.input_spec.shape)
        probabilities = self.served.predict(images)
        indices = probabilities.argmax(axis=1)
        label = InferOutput("label", [len(images)], "BYTES")
        label.set_data_from_numpy(np.array([self.served.class_names[k] for k in indices], dtype=object),
                                  binary_data=False)
        label_index = InferOutput("label_index", [len(images)], "INT64")
        label_index.set_data_from_numpy(indices.astype(np.int64), binary_data=False)
        scores = InferOutput("probabilities", list(probabilities.shape), "FP32")
        scores.set_data_from_numpy(probabilities, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[label, label_index, scores],
                             response_id=payload.id or str(uuid.uuid4()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(1)  # as `aimass serve` does: the comparison is of the serving stacks, not of torch
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start(
        [ImageClassifier(MODEL_NAME, args.model_dir)])
