"""The network, in ``keras.layers`` / ``keras.ops`` only: layers with the project's geometry
(``layers``), batch normalization (``batch_norm``), the atrous backbones (``resnet``,
``mobilenet``, with ``stride_plan``), the heads (``aspp``, ``decoder``), the assembled DeepLabV3
and its builders (``deeplabv3``), input normalization (``preprocessing``), inference-time
batch-norm folding (``fuse``), performance options that pick kernels, never results
(``options``) and the parameter / FLOP description (``description``). Add a head here, next to
``aspp``, and register it in ``deeplabv3``."""
