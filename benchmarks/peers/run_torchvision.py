"""Peer runner: torchvision DeepLabv3 ResNet-101 on CPU PyTorch (run in peers/torch).

Builds the same model as every other side: ResNet-101 at output stride 16 (or 8), multi-grid
(1, 2, 4) in layer4, ASPP rates 6/12/18 (12/24/36 at OS 8) with image pooling, 21 classes,
random weights. torchvision's ``deeplabv3_resnet101`` fixes output stride 8 and adds a 3x3
256->256 conv + BN + ReLU after ASPP (~0.6 GMACs at 513, OS 16) that the paper does not have;
it is removed here unless ``--keep-extra-head-conv``. torchvision's ResNet is v1.5 (stride on
the 3x3 conv), which costs ~1.6 GFLOPs more than the paper's v1 at 513, OS 16; it is kept.

Prints one ``BENCH_JSON`` line (see common.py).
"""

import common



def _own_arguments(parser):
    parser.add_argument("--keep-extra-head-conv", action="store_true",
                        help="keep torchvision's 3x3 conv after ASPP (not in the paper)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run in torch.channels_last memory format")


args = common.runner_args(description=__doc__, add_arguments=_own_arguments)

import torch  # noqa: E402  pylint: disable=wrong-import-position
from torch import nn  # noqa: E402  pylint: disable=wrong-import-position

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.threads)

# tv_model declares the torchvision::nms / qnms schemas (torchvision's compiled extension links
# CUDA next to the CPU torch wheel) before it imports torchvision; the segmentation models call
# no compiled op.
import tv_model  # noqa: E402  pylint: disable=wrong-import-position
import torchvision  # noqa: E402  pylint: disable=wrong-import-position


def build(output_stride, keep_extra_head_conv):
    """torchvision's DeepLabV3 made into the paper's model at ``output_stride``."""
    return tv_model.deeplabv3(output_stride, keep_extra_head_conv=keep_extra_head_conv)


def count_conv_flops(model, x):
    """Conv FLOPs of one forward pass on ``x``, from forward hooks."""
    total = [0]

    def hook(module, _inputs, output):
        k_h, k_w = module.kernel_size
        n, c_out, h, w = output.shape
        total[0] += 2 * k_h * k_w * (module.in_channels // module.groups) * c_out * n * h * w

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for handle in handles:
        handle.remove()
    return total[0]


def main():
    torch.manual_seed(args.seed)
    model = build(args.output_stride, args.keep_extra_head_conv)
    images, labels = common.seeded_inputs(args.batch, args.size, common.NUM_CLASSES, args.seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format)
    extra = {"versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
             "extra_head_conv": args.keep_extra_head_conv, "channels_last": args.channels_last,
             "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if args.count_flops:
        model.eval()
        extra["model_conv_gflops"] = count_conv_flops(model, x) / 1e9

    if args.task == "infer":
        model.eval()

        def infer():
            with torch.inference_mode():
                if args.dtype == "bfloat16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return model(x)["out"].float()
                return model(x)["out"]

        seconds = common.time_calls(infer, args.warmup, args.repeats)
        if args.dtype == "bfloat16":
            with torch.inference_mode():
                reference = model(x)["out"]
            extra["argmax_agreement_vs_float32"] = common.argmax_agreement(
                reference.numpy(), infer().numpy(), channel_axis=1)
    else:
        if args.dtype != "float32":
            raise SystemExit("training runs in float32 only")
        model.train()
        if args.batch == 1:
            # BN over one 1x1 pooled vector has no variance: keep image pooling's BN in eval.
            model.classifier[0].convs[-1][2].eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss(ignore_index=255)

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x)["out"], y)
            loss.backward()
            optimizer.step()
            return loss.item()

        seconds = common.time_calls(train_step, args.warmup, args.repeats)
    common.emit(common.base_result(args, "torchvision", seconds=seconds,
                                   median_s=common.median(seconds),
                                   peak_rss_mb=common.peak_rss_mb(), **extra))


if __name__ == "__main__":
    main()
