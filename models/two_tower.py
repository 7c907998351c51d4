"""Hybrid two-tower network: an item tower on ID + content, a user tower on the recent history.

Item vector = ID embedding + embeddings of category, brand, price band and the mean of its attribute
embeddings. ID embeddings start at zero, are dropped at random in training (``id_dropout``) and are used only
for items with train interactions, so the content part carries meaning alone: an item with
attributes but no interactions gets a content vector (``encode_items`` scores items the model has
never seen). User vector = MLP over
the recency-weighted mean of the history's item vectors (learned weight per position from the end).
Trained on (history prefix → next item) pairs with a sampled softmax over in-batch positives plus
shared uniform negatives, accidental hits masked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from evaluation.data import ItemFeatures, TrainData
from models.base import EpochCallback, Recommender, register
from models.sasrec import pad_left
from models.torch_utils import (
    EarlyStopping,
    autocast_context,
    pick_device,
    progress,
    seed_everything,
    validation_ndcg,
    validation_users,
)


class ItemTower(nn.Module):
    """ID + category + brand + price band + mean attribute embedding, all (·, dim)."""

    def __init__(self, n_items: int, n_category: int, n_brand: int, n_price: int, n_attr: int, dim: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_items, dim)
        self.category = nn.Embedding(n_category, dim, padding_idx=0)
        self.brand = nn.Embedding(n_brand, dim, padding_idx=0)
        self.price = nn.Embedding(n_price, dim, padding_idx=0)
        self.attr = nn.EmbeddingBag(max(n_attr, 1), dim, mode="mean")
        nn.init.zeros_(self.ids.weight)
        for emb in (self.category, self.brand, self.price):
            nn.init.normal_(emb.weight, std=0.1)
            with torch.no_grad():
                emb.weight[0].zero_()
        nn.init.normal_(self.attr.weight, std=0.1)

    def content(
        self, cat: torch.Tensor, brand: torch.Tensor, price: torch.Tensor, attrs: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Content part only; ``attrs`` = (flat attribute ids, offsets) of the items, EmbeddingBag style."""
        flat, offsets = attrs
        return self.category(cat) + self.brand(brand) + self.price(price) + self.attr(flat, offsets)

    def forward(self, items: torch.Tensor, content: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.ids(items)
        if id_keep is not None:
            ids = ids * id_keep.unsqueeze(-1)
        return ids + content


class UserTower(nn.Module):
    """Recency-weighted mean of history item vectors (weights learned per position from the end) → MLP + skip."""

    def __init__(self, dim: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.position_logits = nn.Parameter(torch.zeros(max_len))
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, hist_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) right-aligned history vectors, (B, L) validity → (B, dim)."""
        logits = self.position_logits[-hist_vectors.shape[1] :].expand_as(mask)
        weights = torch.softmax(logits.masked_fill(~mask, -1e9), dim=1) * mask
        pooled = (weights.unsqueeze(-1) * hist_vectors).sum(dim=1)
        return pooled + self.mlp(pooled)


class ContentTable:
    """Item content as tensors: codes per item and the attribute CSR in EmbeddingBag form."""

    def __init__(self, features: ItemFeatures | None, n_items: int) -> None:
        if features is None:
            zeros = np.zeros(n_items, dtype=np.int64)
            features = ItemFeatures(zeros, zeros, zeros, sp.csr_matrix((n_items, 0), dtype=np.float32), zeros > -1)
        attrs = sp.csr_matrix(features.attributes)
        self.category = torch.as_tensor(np.asarray(features.category, dtype=np.int64))
        self.brand = torch.as_tensor(np.asarray(features.brand, dtype=np.int64))
        self.price = torch.as_tensor(np.asarray(features.price_band, dtype=np.int64))
        self.attr_indices = torch.as_tensor(attrs.indices.astype(np.int64))
        self.attr_indptr = torch.as_tensor(attrs.indptr.astype(np.int64))
        self.n_attr = attrs.shape[1]

    def sizes(self) -> tuple[int, int, int, int]:
        """Embedding table sizes (max code + 1, so code 0 = unknown is the padding row)."""
        return (
            int(self.category.max()) + 1 if len(self.category) else 1,
            int(self.brand.max()) + 1 if len(self.brand) else 1,
            int(self.price.max()) + 1 if len(self.price) else 1,
            self.n_attr,
        )

    def content(self, tower: ItemTower, items: torch.Tensor) -> torch.Tensor:
        """Content vectors of ``items`` (1-d CPU index tensor) on the tower's device."""
        dev = tower.ids.weight.device
        starts, ends = self.attr_indptr[items], self.attr_indptr[items + 1]
        counts = ends - starts
        offsets = torch.cumsum(counts, 0) - counts
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(offsets, counts)
        flat = self.attr_indices[torch.repeat_interleave(starts, counts) + within]
        return tower.content(
            self.category[items].to(dev),
            self.brand[items].to(dev),
            self.price[items].to(dev),
            (flat.to(dev), offsets.to(dev)),
        )


@register
class TwoTower(Recommender):
    """Hybrid two-tower retrieval model (ID + content item tower, history user tower), sampled softmax."""

    name = "two_tower"
    defaults = {
        "full": {
            "dim": 64,
            "max_len": 50,
            "dropout": 0.3,
            "id_dropout": 0.3,
            "lr": 2e-3,
            "weight_decay": 0.0,
            "batch_size": 256,
            "samples_per_user": 4,
            "n_negatives": 2048,
            "epochs": 60,
            "patience": 5,
            "val_users": 10000,
            "max_minutes": 15.0,
        },
        "quick": {"epochs": 8, "patience": 2, "samples_per_user": 2, "val_users": 2000, "max_minutes": 2.0},
    }

    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        params = self.params
        gen = seed_everything(int(params["seed"]))
        rng = np.random.default_rng(int(params["seed"]))
        device = pick_device(str(params["device"]))
        self.device_used = str(device)
        self.table = ContentTable(data.item_features, data.n_items)
        self.warm = torch.as_tensor(np.asarray(data.train.getnnz(axis=0)) > 0).float()
        self._build(data.n_items, device)
        seqs = [np.asarray(s, dtype=np.int64) for s in data.sequences if len(s) >= 2]
        if not seqs:
            raise ValueError("two_tower: no user has 2+ train items in data.sequences; nothing to learn from")
        weights = list(self.item_tower.parameters()) + list(self.user_tower.parameters())
        opt = torch.optim.Adam(weights, lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
        stopper = EarlyStopping(int(params["patience"]))
        val_users = validation_users(data, int(params["val_users"]), int(params["seed"]))
        batch, n_neg = int(params["batch_size"]), int(params["n_negatives"])
        start = time.perf_counter()
        deadline = start + 60.0 * float(params["max_minutes"])
        for epoch in range(1, int(params["epochs"]) + 1):
            hist, target = self._examples(seqs, int(params["samples_per_user"]), rng)
            order = torch.randperm(len(target), generator=gen)
            self.item_tower.train()
            self.user_tower.train()
            total = 0.0
            n_batches = (len(order) + batch - 1) // batch
            for b in progress(range(n_batches), desc=f"two_tower epoch {epoch}", total=n_batches):
                idx = order[b * batch : (b + 1) * batch]
                pos = target[idx]
                neg = torch.randint(0, data.n_items, (n_neg,), generator=gen)
                candidates = torch.cat([pos, neg])
                with autocast_context(device):
                    users = self._encode_users(hist[idx], device, train=True)
                    items = self._encode_items(candidates, device, train=True)
                    logits = users @ items.T
                # mask accidental hits: a candidate equal to this row's positive, other than its own column
                hits = candidates.to(device)[None, :] == pos.to(device)[:, None]
                hits[torch.arange(len(pos)), torch.arange(len(pos))] = False
                logits = logits.float().masked_fill(hits, float("-inf"))
                loss = nn.functional.cross_entropy(logits, torch.arange(len(pos), device=device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self._refresh()
            metrics = {"loss": total / max(len(order), 1)}
            if val_users is not None:
                metrics["val_ndcg@10"] = validation_ndcg(self, data, val_users)
                stopper.update(metrics["val_ndcg@10"], epoch, self._modules_dict())
            self.history.append({"epoch": float(epoch), **metrics})
            if callback is not None:
                callback(epoch, metrics)
            if stopper.should_stop or time.perf_counter() > deadline:
                break
        stopper.restore(self._modules_dict())
        self._refresh()
        self.best_epoch = stopper.best_epoch
        self.train_seconds = time.perf_counter() - start

    # ---- internals ----------------------------------------------------------------------------
    def _build(self, n_items: int, device: torch.device) -> None:
        n_cat, n_brand, n_price, n_attr = self.table.sizes()
        dim = int(self.params["dim"])
        self.item_tower = ItemTower(n_items, n_cat, n_brand, n_price, n_attr, dim).to(device)
        self.user_tower = UserTower(dim, int(self.params["max_len"]), float(self.params["dropout"])).to(device)

    def _modules_dict(self) -> nn.ModuleDict:
        return nn.ModuleDict({"item": self.item_tower, "user": self.user_tower})

    def _examples(
        self, seqs: list[np.ndarray], per_user: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_user`` random (prefix, next item) pairs per sequence; prefixes right-aligned, 0-padded (+1)."""
        prefixes, targets = [], []
        for seq in seqs:
            cuts = rng.integers(1, len(seq), size=per_user)
            for cut in cuts:
                prefixes.append(seq[:cut])
                targets.append(seq[cut])
        hist = torch.from_numpy(pad_left(prefixes, int(self.params["max_len"])))
        return hist, torch.as_tensor(np.asarray(targets, dtype=np.int64))

    def _encode_items(self, items: torch.Tensor, device: torch.device, train: bool) -> torch.Tensor:
        """Item vectors; the ID part only for items with train interactions (others: content alone)."""
        content = self.table.content(self.item_tower, items)
        keep = self.warm[items].to(device)
        if train and float(self.params["id_dropout"]) > 0:
            keep = keep * (torch.rand(len(items), device=device) >= float(self.params["id_dropout"])).float()
        return self.item_tower(items.to(device), content, keep)

    def _encode_users(self, hist: torch.Tensor, device: torch.device, train: bool) -> torch.Tensor:
        """``hist``: (B, L) item index + 1, 0 = pad."""
        width = max(int((hist > 0).sum(dim=1).max()), 1)
        hist = hist[:, -width:]
        mask = (hist > 0).to(device)
        flat = (hist.clamp(min=1) - 1).reshape(-1)
        if train:
            uniq, inverse = torch.unique(flat, return_inverse=True)
            vecs = self._encode_items(uniq, device, train=True)[inverse.to(device)]
        else:
            vecs = self._item_cache[flat.to(device)]
        return self.user_tower(vecs.reshape(*hist.shape, -1), mask)

    def _refresh(self) -> None:
        """Recompute the cached item matrix (eval mode) used for scoring and history encoding."""
        self.item_tower.eval()
        self.user_tower.eval()
        n_items = self.item_tower.ids.num_embeddings
        device = self.item_tower.ids.weight.device
        with torch.no_grad():
            parts = [
                self._encode_items(torch.arange(s, min(s + 8192, n_items)), device, train=False)
                for s in range(0, n_items, 8192)
            ]
        self._item_cache = torch.cat(parts).float() if parts else torch.zeros(0, int(self.params["dim"]))

    # ---- scoring ------------------------------------------------------------------------------
    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        """User tower over the last ``max_len`` history items; zeros for an empty history."""
        out = np.zeros((len(histories), int(self.params["dim"])), dtype=np.float32)
        rows = [i for i, h in enumerate(histories) if len(h)]
        if not rows:
            return out
        hist = torch.from_numpy(pad_left([histories[i] for i in rows], int(self.params["max_len"])))
        device = self.item_tower.ids.weight.device
        self.user_tower.eval()
        with torch.no_grad():
            vecs = [self._encode_users(hist[s : s + 4096], device, train=False) for s in range(0, len(hist), 4096)]
        out[rows] = torch.cat(vecs).float().cpu().numpy()
        return out

    def item_matrix(self) -> np.ndarray:
        return self._item_cache.cpu().numpy()

    def encode_items(self, features: ItemFeatures) -> np.ndarray:
        """Vectors for items the model has never seen, from content alone (no ID part): (n, dim).

        Category/brand/price codes and attribute columns must use this model's training vocabulary.
        """
        table = ContentTable(features, len(features.category))
        n_cat, n_brand, n_price, n_attr = self.table.sizes()
        for name, codes, size in (
            ("category", table.category, n_cat),
            ("brand", table.brand, n_brand),
            ("price_band", table.price, n_price),
        ):
            if len(codes) and int(codes.max()) >= size:
                raise ValueError(
                    f"two_tower.encode_items: {name} code {int(codes.max())} is outside the training vocabulary (< {size})"
                )
        if table.n_attr > max(n_attr, 1):
            raise ValueError(f"two_tower.encode_items: attributes has {table.n_attr} columns, the model knows {n_attr}")
        self.item_tower.eval()
        with torch.no_grad():
            vec = table.content(self.item_tower, torch.arange(len(features.category)))
        return vec.float().cpu().numpy()

    # ---- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in self._modules_dict().state_dict().items()}
        state.update(
            {
                "table.category": self.table.category.numpy(),
                "table.brand": self.table.brand.numpy(),
                "table.price": self.table.price.numpy(),
                "table.attr_indices": self.table.attr_indices.numpy(),
                "table.attr_indptr": self.table.attr_indptr.numpy(),
                "table.n_attr": np.asarray([self.table.n_attr], dtype=np.int64),
                "warm": self.warm.numpy(),
            }
        )
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        n_items = len(state["table.category"])
        n_attr = int(state["table.n_attr"][0])
        attrs = sp.csr_matrix(
            (
                np.ones(len(state["table.attr_indices"]), np.float32),
                state["table.attr_indices"],
                state["table.attr_indptr"],
            ),
            shape=(n_items, n_attr),
        )
        features = ItemFeatures(
            state["table.category"], state["table.brand"], state["table.price"], attrs, np.ones(n_items, bool)
        )
        self.table = ContentTable(features, n_items)
        self.warm = torch.as_tensor(np.asarray(state["warm"], dtype=np.float32))
        self._build(n_items, torch.device("cpu"))
        nets = {k[len("net.") :]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        self._modules_dict().load_state_dict(nets)
        self._refresh()
