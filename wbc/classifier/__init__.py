"""A trained classifier, after training: the file it is kept in and what it is used for.

- ``model_file``: the weights without pickle and what using them needs (classes, image size,
  normalisation, provenance), saved and loaded;
- ``inference``: predictions for image files and scores on a labelled tree (``wbc predict``,
  ``wbc evaluate``);
- ``export``: the classifier as ONNX or a ``torch.export`` program, checked against the model
  (``wbc export``).

The modules are imported by name: importing the package imports no torch.
"""

__all__: list[str] = []
