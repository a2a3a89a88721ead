"""Evaluation of frozen features and probes, on tensors: the top-k accuracy metric (an offline `evaluate` module,
`evaluation.metrics`) and k-NN classification with its (k, T) choice on a held-out split (`evaluation.knn`). Nothing
here trains, loads a model or reads a cache."""
