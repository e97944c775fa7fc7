"""The scikit-learn 8x8 digits (shipped with the package, no download), scaled to [-1, 1], with a fixed
train / held-out split shared by training, the classifier and the evaluation."""
import numpy as np

HELDOUT = 360  # of 1797 images; the rest (1437) train the denoiser and the classifier


def digits():
    """(train_x, train_y, test_x, test_y); x float32 [N, 1, 8, 8] in [-1, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 * 2 - 1)[:, None]
    perm = np.random.default_rng(0).permutation(len(x))
    te, tr = perm[:HELDOUT], perm[HELDOUT:]
    return x[tr], d.target[tr], x[te], d.target[te]
