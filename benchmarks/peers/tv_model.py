"""torchvision's DeepLabV3 made into the paper's model, wrapped to serve raw pixels (issue 22).

The same model as run_torchvision.py builds (ResNet-101, output stride 16, multi-grid (1, 2, 4)
in layer4, ASPP 6/12/18 with image pooling, 21 classes, without torchvision's extra 3x3 head
conv), behind what a deployment runs around it: uint8 pixels [N, H, W, 3] -> ImageNet
normalization -> logits at the input size -> (softmax probabilities, class map), the outputs
of our SavedModel's signature. Used by prepare_serving_torch.py and run_serving.py.
"""

import torch
from torch import nn

import common

# torchvision's compiled extension links CUDA next to the CPU torch wheel: declare the two
# schemas its Python side registers fake ops for (see run_torchvision.py).
try:
    _TV_LIB = torch.library.Library("torchvision", "DEF")  # pylint: disable=invalid-name
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:  # already declared in this process
    pass

import torchvision  # noqa: E402  pylint: disable=wrong-import-position
from torchvision.models import resnet101  # noqa: E402  pylint: disable=wrong-import-position
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402  pylint: disable=wrong-import-position
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3  # noqa: E402  pylint: disable=wrong-import-position


def torchvision_version():
    return torchvision.__version__


def deeplabv3(output_stride=16, keep_extra_head_conv=False):
    """ResNet-101 (torchvision's v1.5: stride on the 3x3), dilated to ``output_stride``,
    multi-grid in layer4, ASPP; torchvision's extra 3x3 head conv (not in the paper) removed
    unless ``keep_extra_head_conv``."""
    dilate = {16: [False, False, True], 8: [False, True, True]}[output_stride]
    backbone = resnet101(weights=None, replace_stride_with_dilation=dilate)
    block_rate = 32 // output_stride
    for unit, grid in zip(backbone.layer4, common.MULTI_GRID):
        rate = block_rate * grid
        unit.conv2.dilation = (rate, rate)
        unit.conv2.padding = (rate, rate)
    backbone = IntermediateLayerGetter(backbone, return_layers={"layer4": "out"})
    head = DeepLabHead(2048, common.NUM_CLASSES, atrous_rates=common.aspp_rates(output_stride))
    if not keep_extra_head_conv:
        head[1], head[2], head[3] = nn.Identity(), nn.Identity(), nn.Identity()
    return DeepLabV3(backbone, head, None)


class Served(nn.Module):
    """uint8 pixels [N, H, W, 3] -> (probabilities [N, C, H, W], class map int64 [N, H, W])."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def forward(self, pixels):
        x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
        probabilities = self.net(x)["out"].softmax(1)
        return probabilities, probabilities.argmax(1)


def served_model(output_stride=16):
    return Served(deeplabv3(output_stride))
