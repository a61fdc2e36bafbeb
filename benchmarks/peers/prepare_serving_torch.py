"""Makes the torchvision side's serving artefacts (issue 22), in peers/torch.

  torchvision_state.pt    the served model's weights (seeded random init, BN statistics made
                          non-trivial), loaded by the torch_eager side
  torchvision_f32.onnx    the same model exported to ONNX (TorchScript exporter, opset 17)
  torchvision_int8.onnx   ONNX Runtime's static int8 quantization of it (QDQ, per-channel
                          int8 weights, uint8 activations, calibrated on seeded images)
  floor.onnx              a one-convolution model (the runtime's own footprint)

Usage: python prepare_serving_torch.py --artifacts DIR [--size 513] [--calibration 4]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import tv_model  # noqa: E402


def main():
    args = common.prepare_args(__doc__)
    torch.manual_seed(args.seed)
    model = tv_model.served_model().eval()
    generator = torch.Generator().manual_seed(args.seed)
    for module in model.modules():  # trained-looking BN statistics, not mean 0 / var 1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    torch.save(model.state_dict(), os.path.join(args.artifacts, "torchvision_state.pt"))
    pixels = torch.zeros(1, args.size, args.size, 3, dtype=torch.uint8)
    start = time.time()
    f32 = os.path.join(args.artifacts, "torchvision_f32.onnx")
    torch.onnx.export(model, (pixels,), f32, input_names=["pixels"],
                      output_names=["probabilities", "semantic"], opset_version=17, dynamo=False)
    print(f"onnx export {time.time() - start:.0f} s", flush=True)

    from onnxruntime import quantization as q  # pylint: disable=import-outside-toplevel

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            rng = np.random.Generator(np.random.PCG64(args.seed + 1))
            self.items = iter([{"pixels": rng.integers(0, 256, (1, args.size, args.size, 3),
                                                        dtype=np.uint8)}
                               for _ in range(args.calibration)])

        def get_next(self):
            return next(self.items, None)

    start = time.time()
    prepared = os.path.join(args.artifacts, "torchvision_f32_prep.onnx")
    q.quant_pre_process(f32, prepared)
    q.quantize_static(prepared, os.path.join(args.artifacts, "torchvision_int8.onnx"), Reader(),
                      quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    os.remove(prepared)
    print(f"onnx int8 quantization {time.time() - start:.0f} s", flush=True)

    floor = torch.nn.Conv2d(3, 8, 3, padding=1).eval()

    class Floor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = floor

        def forward(self, pixels):
            return self.conv(pixels.permute(0, 3, 1, 2).float()).argmax(1)

    torch.onnx.export(Floor(), (torch.zeros(1, 8, 8, 3, dtype=torch.uint8),),
                      os.path.join(args.artifacts, "floor.onnx"), input_names=["pixels"],
                      output_names=["semantic"], opset_version=17, dynamo=False)


if __name__ == "__main__":
    main()
