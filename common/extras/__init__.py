"""Helpers that only the extras/ notebooks use (the related course tasks).

They may import the core package; the core never imports them, so the main
notebooks and the release tooling work without this subpackage.

    theory      closed-form answers to the written problems (theory_checks)
    numpy_mlp   an MLP in NumPy alone, trained and reused by settings (numpy_mlp)
    mlp_checks  its gradients against finite differences and torch autograd (numpy_mlp)
    models      the Fashion-MNIST networks the registry lacks (fashion_mnist)
    selection   a grid chosen on validation; a confusion matrix read (fashion_mnist)
    tb          TensorBoard event files from saved histories, and back (fashion_mnist)
"""
