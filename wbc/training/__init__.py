"""Training a WBC classifier, without Ray: the one way into the loops and everything they use.

- ``run``: one training run (``train_run``), the single entry point, supervised or SimCLR;
- ``loop``: the supervised loop (``fit``, ``train_one_epoch``, ``evaluate``), data resident
  on the device;
- ``inputs``: a scanned tree and the decode cache turned into the tensors a run needs;
- ``resnet``: the ResNet-18 factory, head replacement and backbone loading;
- ``pretrain``: pretrained starting weights (CAM16 and friends) and where they are kept;
- ``ssl``: self-supervised pretraining of the backbone (SimCLR);
- ``schedule``: optimisers and learning-rate schedules; ``seeding``: the one seeding helper;
- ``distributed``: what a loop needs to know about data parallelism (DDP) and precision;
- ``hardware``: what the machine is and does fast (CPU flags, bf16, GPUs, memory).

The modules are imported by name (``from wbc.training.run import train_run``): importing the
package imports no torch.
"""

__all__: list[str] = []
