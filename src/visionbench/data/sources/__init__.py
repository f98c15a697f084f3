"""Where a dataset's files are listed and split: class folders, image/mask layouts, the built-in generated datasets."""
