"""Shared machinery for the COMP5541 notebooks and the extras.

Importing the package has no side effects: nothing is downloaded, no device is
probed and no global state changes until a function is called.

Modules:
    runtime   notebook plumbing: paths, device, seeding, config, summary.json
    data      datasets -> uint8 tensors -> stratified subsets -> device batches
    run       the papermill runner behind `make smoke` / `make all`
"""
