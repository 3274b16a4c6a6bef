""" Pseudo-labels of SAMix-C: faiss k-means on PCA-whitened, L2-normalised embeddings (spec §6).

The same code runs on GPU and CPU: faiss' ``Kmeans(gpu=...)`` is told whether faiss sees GPUs.
faiss is an optional dependency (the ``ssl`` extra); a missing install is a one-line ConfigError.
"""
import logging
from types import ModuleType

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ['require_faiss', 'pca_whiten', 'kmeans_labels']

_logger = logging.getLogger(__name__)


def require_faiss() -> ModuleType:
    """The faiss module, or a ConfigError naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ConfigError("SAMix-C clustering needs faiss, which is not installed: "
                          "pip install 'samix-timm[ssl]' (or faiss-gpu on CUDA machines)") from None
    return faiss


def pca_whiten(features: np.ndarray, dim: int = 256) -> np.ndarray:
    """PCA to ``dim`` (at most the feature and sample counts), whitening, L2 normalisation (§6)."""
    faiss = require_faiss()
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    dim = min(dim, d, n)
    pca = faiss.PCAMatrix(d, dim, -0.5)  # eigen_power -0.5: whitening
    pca.train(x)
    y = pca.apply_py(x)
    faiss.normalize_L2(y)
    return y


def kmeans_labels(
        features: torch.Tensor,
        num_clusters: int,
        pca_dim: int = 256,
        niter: int = 20,
        seed: int = 0,
) -> torch.Tensor:
    """Cluster index (N,) of each row of ``features`` (NxD) by faiss k-means (§6: C = 200, PCA 256, 20 iter).

    Args:
        features: Embeddings of the train set (any device; computed on CPU/GPU by faiss).
        num_clusters: C; must not exceed the number of samples.
        pca_dim: Dimension after PCA + whitening.
        niter: k-means iterations.
        seed: k-means seed (a run passes its seed and epoch, so resume reproduces the labels).
    """
    faiss = require_faiss()
    n = features.shape[0]
    if num_clusters < 2 or num_clusters > n:
        raise ConfigError(f'num_clusters={num_clusters} must be between 2 and the {n} training samples: '
                          f'use fewer clusters')
    x = pca_whiten(features.detach().float().cpu().numpy(), pca_dim)
    use_gpu = faiss.get_num_gpus() > 0
    kmeans = faiss.Kmeans(x.shape[1], num_clusters, niter=niter, seed=seed, gpu=use_gpu, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, n // num_clusters + 1))
    kmeans.train(x)
    _, labels = kmeans.index.search(x, 1)
    _logger.info(f'k-means: {n} samples -> {num_clusters} clusters on {"GPU" if use_gpu else "CPU"} '
                 f'({len(np.unique(labels))} non-empty)')
    return torch.from_numpy(labels[:, 0].astype(np.int64))
