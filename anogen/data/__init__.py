"""Files in: image and mask I/O, dataset readers, the project workspace, the demo data."""
