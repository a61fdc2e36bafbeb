"""The network, in ``keras.layers`` / ``keras.ops`` only, built from parts: the model's settings
(``settings``: the one list of them, their defaults and ``get_config``'s keys), the backbone
factory (``backbones``: the registry of the atrous ``resnet`` and ``mobilenet`` backbones, with
``stride_plan``), the heads (``heads``: the registry of ``aspp``, ASPP-lite and the cascade; the
logits), the DeepLabv3+ ``decoder``, and ``DeepLabV3`` that composes them, with its builders
(``deeplabv3``). Around them: layers with the project's geometry (``layers``), batch
normalization (``batch_norm``), ImageNet weight files (``weights``), input normalization
(``preprocessing``), inference-time batch-norm folding (``fuse``), performance options that pick
kernels, never results (``options``) and the parameter / FLOP description (``description``).
A backbone is one entry of ``backbones.BACKBONES``; a head is a layer next to ``aspp`` and one
entry of ``heads.HEADS``; a model setting is one field of ``settings.ModelSettings``."""
