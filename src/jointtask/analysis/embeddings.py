"""Structure of the number-token embeddings (docs/definitions.md, Embeddings).

The n x d rows of the token embedding for the values are turned into their n x n cosine-
similarity matrix (comparable across widths), and PCA runs on that matrix's rows.

Separation score (ours): in the top `k` principal components,
    (mean distance between points of different classes - mean distance within a class)
    / mean distance over all pairs,
so 0 means the labelling is invisible and larger is cleaner. Its p-value is a permutation
test against random labellings with the same class sizes.
Ordering: |Spearman rank correlation| between a value and its coordinate on PC1.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr
from sklearn.decomposition import PCA


def cosine_similarity_matrix(emb: np.ndarray) -> np.ndarray:
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def pca_of_similarity(emb: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates [n, k] and explained-variance ratios of the PCA of the similarity matrix."""
    sim = cosine_similarity_matrix(emb)
    k = min(k, sim.shape[0])
    pca = PCA(n_components=k, random_state=0).fit(sim)
    return pca.transform(sim), pca.explained_variance_ratio_


def _score(dist: np.ndarray, labels: np.ndarray) -> float:
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    within, between = dist[same & off], dist[~same]
    if len(within) == 0 or len(between) == 0:
        return float("nan")
    return float((between.mean() - within.mean()) / dist[off].mean())


def separation(coords: np.ndarray, labels, n_perm: int = 999, seed: int = 0) -> dict:
    labels = np.asarray(labels)
    dist = squareform(pdist(coords))
    obs = _score(dist, labels)
    rng = np.random.default_rng(seed)
    null = np.array([_score(dist, rng.permutation(labels)) for _ in range(n_perm)])
    p = (1 + int((null >= obs).sum())) / (1 + n_perm)
    return {"score": obs, "p_value": p, "null_mean": float(null.mean())}


def ordering(coords: np.ndarray, values) -> float:
    rho = float(getattr(spearmanr(np.asarray(values), coords[:, 0]), "statistic"))
    return float(abs(rho)) if np.isfinite(rho) else 0.0


def embedding_structure(emb: np.ndarray, family, k: int = 3, n_perm: int = 999) -> dict:
    coords, var = pca_of_similarity(emb, k)
    labels = family.labellings()
    return {
        "coords": coords,
        "explained_variance": var,
        "similarity": cosine_similarity_matrix(emb),
        "ordering": ordering(coords, np.arange(len(emb))),
        "separation": {name: separation(coords, lab, n_perm) for name, lab in labels.items()},
        "labels": labels,
    }


def number_embeddings(model, vocab) -> np.ndarray:
    w = model.tok_embed.weight.detach().cpu().numpy()
    return w[vocab.value_offset : vocab.value_offset + vocab.family.n_values]
