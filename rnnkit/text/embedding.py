"""One-hot vectors, the embedding layer, and embeddings from factorising a document-word matrix.

Deck 002: multiplying a weight matrix by a one-hot vector just extracts a column,

    W e_j = W[:, j]          (W: E x V,  e_j: the j-th one-hot vector of length V)

so an embedding layer stores W and looks the column up instead of multiplying.

Deck 003: n documents over a vocabulary of d words give a document-word matrix D (n x d). Factorise

    D ≈ U V,   U: n x k (row i = embedding of document i),   V: k x d (column j = embedding of word j)

Truncated SVD gives the best rank-k factorisation in the least-squares sense: D ≈ (U_k Σ_k) V_k^T.
"""

import numbers
import operator

import numpy as np
import scipy.sparse as sp
import torch

from rnnkit.errors import RnnkitError, check_seed, fits_int64, said


def check_ids(ids: torch.Tensor, V: int) -> None:
    """Token ids must be integers in 0..V-1 (a negative id would silently index from the end)."""
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise RnnkitError(f"ids must be an integer tensor (torch.long), got {ids.dtype}")
    if not ids.dtype.is_signed:  # torch's min/max take no uint16, 32, 64 (a uint64 past 2^63 is < 0 here)
        ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
        raise RnnkitError(f"ids must lie in 0..{V - 1} for a vocabulary of {V}")


def _size(value, what: str) -> int:
    """A whole number >= 0 (a float, bool or negative size failed inside torch: 'empty() takes 1 positional
    argument but 2 were given'; True ran as 1), below 2^63 (2**63: torch's "Overflow when unpacking long long")."""
    try:
        if isinstance(value, bool) or getattr(value, "dtype", None) == torch.bool:
            raise TypeError
        size = operator.index(value)  # int, numpy's, a 0-d integer tensor
    except TypeError:
        size = -1
    if size < 0:
        raise RnnkitError(f"{what} must be an integer >= 0, got {said(value)}")
    return fits_int64(what, size)


def _as_ids(ids) -> torch.Tensor:
    """ids as a tensor: a list or array of them too, an empty one as no ids (torch and numpy make it floats); a
    tensor stays on its device (as_tensor moved it to torch's default device)."""
    if isinstance(ids, torch.Tensor):
        return ids
    t = torch.as_tensor(ids)
    return t.long() if t.numel() == 0 else t


def one_hot(ids: torch.Tensor, V: int, dtype=None) -> torch.Tensor:
    """e_j for each id: shape (*ids.shape, V) with a single 1 in position id, on the ids' device (as F.one_hot);
    dtype: torch's default."""
    ids, V = _as_ids(ids), _size(V, "one_hot's V (the vocabulary size)")
    check_ids(ids, V)
    # (made on the default device, CUDA ids failed in scatter_: 'Expected all tensors to be on the same device')
    x = torch.zeros(*ids.shape, V, dtype=dtype or torch.get_default_dtype(), device=ids.device)
    return x.scatter_(-1, ids.long().unsqueeze(-1), 1.0)  # scatter takes int64 (or int32) ids only


class Embedding(torch.nn.Module):
    """x_t = W[:, id_t], the same as W @ one_hot(id_t) without building the one-hot vector.

    The weight is stored as rows (V, E), as `torch.nn.Embedding` stores it: row j is column j of the
    deck's W (E x V).

    Shapes: ids (B, T) long -> (B, T, E). Ids are checked to lie in 0..V-1 (one min/max per call);
    a training loop that has checked its data can index `self.weight` directly.
    """

    def __init__(self, V: int, E: int):
        super().__init__()
        V, E = _size(V, "Embedding's V (the vocabulary size)"), _size(E, "Embedding's E (the embedding size)")
        self.weight = torch.nn.Parameter(torch.empty(V, E))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight, std=1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = _as_ids(ids)
        check_ids(ids, len(self.weight))
        return self.weight[ids.long()]  # (B, T, E); uint8 ids would index as a boolean mask


def document_word_matrix(docs: list[list[int]], V: int) -> sp.csr_matrix:
    """D[i, j] = how often word j occurs in document i; a sparse n x V count matrix."""
    rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    cols = np.asarray([j for d in docs for j in d])
    if cols.size and (cols.dtype.kind not in "iu" or cols.min() < 0 or cols.max() >= V):
        # fromiter cut 0.5 to word 0 and counted it there; -1 and V were scipy's index errors
        raise RnnkitError(f"word ids must be whole numbers in 0..{V - 1} for a vocabulary of {V}")
    cols = cols.astype(np.int64)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), V))


def svd_embeddings(D, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Factorise D ≈ U V with truncated SVD (scikit-learn's randomized solver).

    Returns:
        U: (n, k), rows are document embeddings (= U_k Σ_k).
        V: (k, d), columns are word embeddings (= V_k^T).
    """
    n, d = D.shape
    # (1.5 failed in scikit-learn naming its n_components, "2" in '<=', True ran as 1; k = min(n, d), which the
    # randomized solver factorises exactly, was refused; a k past n gave n columns, not k, in silence)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= min(n, d):
        raise RnnkitError(
            f"k must be an integer in 1..{min(n, d)} for a {n} x {d} document-word matrix, got {said(k)}"
        )
    # (-1 or "a" was scikit-learn's "The 'random_state' parameter of TruncatedSVD must be ...", True ran as seed 1)
    seed = check_seed(seed, "seed")
    from sklearn.decomposition import TruncatedSVD  # (imported here: scikit-learn takes a second or two)

    svd = TruncatedSVD(n_components=int(k), random_state=None if seed is None else int(seed))
    U = svd.fit_transform(D)
    return U, svd.components_
