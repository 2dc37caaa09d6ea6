"""Compression: build smaller candidates from the trained teacher and measure each beside it.

Candidates (choose with `compress.methods`):
    prune_unstructured  global magnitude pruning of conv/linear weights to a target sparsity, then fine-tuning
    prune_channels      structured pruning through torch-pruning's dependency graph (channels, hidden units,
                        residual groups of any architecture; the output layer kept), then fine-tuning
    quantize_int8       the teacher in int8: static post-training quantization of conv and linear layers with
                        torchao's PT2E flow (x86 inductor quantizer, calibrated on training images)
    quantize_dynamic_int8  the teacher with dynamic int8 linear layers (torchao); not a default method
    distill             a smaller student (`compress.student`: the built-in CNN at the student widths, or a Hugging
                        Face config) trained on the teacher's temperature-softened outputs
    distill_int8        that student, quantized as above

A candidate whose technique fails (a model torch.export cannot capture, say) is reported as failed with its reason
in `failures.json` and the report, and the other candidates go on; nothing falls back silently to another technique.

Every candidate and the teacher are profiled the same way, side by side in this process: parameters, non-zero
parameters, bytes on disk, validation accuracy, CPU batch-1 latency p50/p99 and batch-64 throughput. Candidates are
compared on the validation split; the test split is left to evaluate, which scores only the chosen model, so the
reported test metrics are not biased by the choice.

Modules: pruning, distillation, quantization (each a technique), measurement (measuring a
saved model as a server loads it), profiles (what was measured, the file evaluate reads; no torch),
stage (`compress`, the compress stage's work; components/compress.py is its KFP wrapper).
"""
