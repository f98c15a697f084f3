"""Pure ``torch.nn`` reproductions of the classic networks (no Lightning, no config objects).

Every network takes ``num_classes`` (and ``in_channels``) in its constructor and declares the
task kind it serves in the class attribute ``task_kind`` so a model/task mismatch fails when
the config is composed.
"""
