"""The package every notebook imports: the core, in data-flow order.

Importing the package has no side effects: nothing is downloaded, no device is
probed and no global state changes until a function is called.

Data flows one way, and so do the imports: parameters -> config -> data -> model
-> fit -> history on disk -> figures, tables and text.

    files          atomic writes, JSON, the settings digest that names a run
    config         parameters -> one validated config (paths, device, seed), summary.json
    data           datasets -> uint8 tensors -> class-stratified subsets (data_sources: readers)
    batches        uint8 tensors -> augmented, normalised batches on the device
    models         name -> network: the CIFAR nets of Q2 (and LeNet-5, an MLP for the extras)
    transfer       Q3: torchvision ImageNet nets, head replacement, layer groups, freezing
    weights        Q3: the ImageNet weights files (found, checked, fabricated for smoke runs)
    hardware       the device's choices: precision, loss scaling, kernels, layout, eval batches
    optim          optimisers and learning-rate schedules by name
    train          train_one_epoch, evaluate (first in the file), fit
    checkpoints    RunDir: one run's folder, atomic checkpoints, resume and reuse
    speed          seconds per trained image of each model on this device, measured and cached
    plan           the training ahead, its time here, its FLOPs and disk, printed before it starts
    experiments    Experiment, the one runner of Q2 and Q3: train-or-reuse, choose on validation, test once
    recipes        Q2's runs, described once from the notebook's parameters (q2_specs)
    transfer_data  Q3's images: nested subsets of the training images, validation outside them
    transfer_runs  Q3's runs, described once (q3_specs): learning-rate trials, pretrained and scratch
    plots          figures from saved histories and predictions
    stats          the noise rule (two standard errors) every comparison and choice uses
    observations   text from saved histories (observations_q2, observations_q3: per question)
    headline       each question's answers at a glance, first in its report
    show           the graded code shown in the notebooks: source listings, layer tables
    backprop, gradcheck, two_layer, latex   Q1: NumPy layers, gradient checks, derivations
    tools/         what makes and ships the bundle: runner, plan, PDF report, check and zip, Colab
    extras/        helpers only the related-task notebooks use
"""
