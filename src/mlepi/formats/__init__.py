"""The files stages hand each other: frames (HDF5), structures (extended XYZ), torch files, the dataset, the
DeepH export, and the provenance record and atomic writes every file gets (``docs/data.md``)."""
