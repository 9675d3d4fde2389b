"""Structure of the number-token embeddings (docs/definitions.md, Embeddings).

The n x d rows of the token embedding for the values are turned into their n x n cosine-
similarity matrix (comparable across widths), and PCA runs on that matrix's rows.

Separation score (ours): in the top `k` principal components,
    (mean distance between points of different classes - mean distance within a class)
    / mean distance over all pairs,
so 0 means the labelling is invisible and larger is cleaner. Its p-value is a permutation
test against random labellings with the same class sizes.
Ordering: |Spearman rank correlation| between a value and its coordinate on PC1.

Frequencies (ours, for Z_n): the discrete Fourier transform of the n value rows over the values,
after removing their mean row; frequency k and n - k are one (a rotation and its inverse), so the
power is given at k = 1..n//2 as shares of the total. A frequency k tells a value modulo
n / gcd(k, n); by the Chinese remainder theorem the value is told by its residues modulo the prime
powers q = p^a of n (20: 4 and 5), and modulo q by the frequencies not divisible by p (at 20: the
odd ones tell it modulo 4, those not divisible by 5 modulo 5). Embeddings with no power at one
factor's frequencies give values that differ by a multiple of n / q the same row.
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


def frequency_power(emb: np.ndarray) -> np.ndarray:
    """[n, d] value embeddings -> [n//2] shares of their power at frequencies k = 1..n//2 of Z_n
    (k and n - k together; the mean row removed). All zeros for embeddings without variation."""
    n = len(emb)
    power = (np.abs(np.fft.fft(emb - emb.mean(axis=0), axis=0)) ** 2).sum(axis=1)  # [n], k = 0..n-1
    folded = np.array([power[k] + (power[n - k] if n - k != k else 0.0) for k in range(1, n // 2 + 1)])
    total = folded.sum()
    return folded / total if total > 0 else folded


def prime_power_factors(n: int) -> list[tuple[int, int]]:
    """[(p, p^a)] for the primes p dividing n, with the largest power of each that divides n."""
    out, m, p = [], n, 2
    while m > 1:
        if m % p == 0:
            q = 1
            while m % p == 0:
                m, q = m // p, q * p
            out.append((p, q))
        p += 1
    return out


def factor_shares(power: np.ndarray, n: int) -> dict[int, float]:
    """{q: share of `frequency_power` at the frequencies that tell a value modulo q} for each prime
    power q of n (those not divisible by q's prime): where the embeddings keep each residue that
    the value is made of."""
    ks = np.arange(1, len(power) + 1)
    return {q: float(power[ks % p != 0].sum()) for p, q in prime_power_factors(n)}
