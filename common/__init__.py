"""Shared machinery for the COMP5541 notebooks and the extras.

Importing the package has no side effects: nothing is downloaded, no device is
probed and no global state changes until a function is called.

Modules:
    runtime   notebook plumbing: paths, device, seeding, config, summary.json
    data      datasets -> uint8 tensors -> stratified subsets -> device batches
    models    a registry of networks by name (CIFAR-sized nets, LeNet-5, MLP)
    train     fit / evaluate: resumable runs, optimisers and schedules by name
    plots     figures drawn from saved histories
    backprop  NumPy layers as forward/backward pairs, gradient checks (Q1)
    latex     matrices and equations rendered from computed values (Q1)
    run       the papermill runner behind `make smoke` / `make all`
    report, submit, colab   PDFs, `make check` / `make zip`, the Colab first cell
    theory, numpy_mlp, extras_models, selection, tb   the extras/ notebooks
"""
