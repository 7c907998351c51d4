"""BPR matrix factorisation (Rendle et al. 2009) for implicit feedback, in PyTorch.

Score ``x_ui = p_u · q_i + b_i``; each train pair (u, i) is contrasted with a uniformly sampled item j
the user has not interacted with, minimising ``−log σ(x_ui − x_uj) + λ(‖p_u‖² + ‖q_i‖² + ‖q_j‖² + b_i² + b_j²)``
with Adam. Optional early stopping on validation NDCG@10 keeps the best epoch's weights.
A user the model never saw is folded in as the mean embedding of their history items (no history:
a zero vector, so the ranking falls back to the item bias, a learned popularity).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from evaluation.data import TrainData
from models.base import UNKNOWN_USER, EpochCallback, Recommender, register
from models.torch_utils import pick_device, progress, seed_everything


def sample_negatives(
    users: np.ndarray, positive_codes: np.ndarray, n_items: int, rng: np.random.Generator, retries: int = 50
) -> np.ndarray:
    """One uniform item per row of ``users``, re-drawn (up to ``retries`` times) while it is a positive.

    ``positive_codes`` are the sorted ``user * n_items + item`` codes of the train pairs.
    """
    neg = rng.integers(0, n_items, size=len(users), dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(retries + 1):
        codes = users[todo] * n_items + neg[todo]
        pos = np.minimum(np.searchsorted(positive_codes, codes), len(positive_codes) - 1)
        todo = todo[positive_codes[pos] == codes]
        if not len(todo):
            break
        neg[todo] = rng.integers(0, n_items, size=len(todo), dtype=np.int64)
    return neg


@register
class BPRRecommender(Recommender):
    name = "bpr"
    defaults = {
        "full": {
            "dim": 64,
            "epochs": 60,
            "batch_size": 4096,
            "lr": 0.002,
            "l2": 1e-5,
            "patience": 5,
            "val_users": 5000,
        },
        # l2 picked on validation NDCG@10 (simulated shop 0.0512 vs 0.0495 at 1e-5; Beauty 0.0147 vs 0.0130).
        "quick": {"dim": 32, "epochs": 8, "batch_size": 2048, "lr": 0.01, "l2": 1e-2, "patience": 2, "val_users": 2000},
    }

    # ---- training ---------------------------------------------------------------------------
    def _fit(self, data: TrainData, callback: EpochCallback | None) -> None:
        params = self.params
        gen = seed_everything(int(params["seed"]))
        rng = np.random.default_rng(int(params["seed"]))
        device = pick_device(params["device"])
        self.device_used = str(device)
        n_users, n_items, dim = data.n_users, data.n_items, int(params["dim"])
        coo = data.train.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        if not len(pos_u):
            raise ValueError("bpr: the train split has no interactions; check the gold split=train partition")
        positive_codes = np.sort(pos_u * n_items + pos_i)

        user_emb = nn.Embedding(n_users, dim).to(device)
        item_emb = nn.Embedding(n_items, dim).to(device)
        bias = nn.Embedding(n_items, 1).to(device)
        nn.init.normal_(user_emb.weight, std=0.1)
        nn.init.normal_(item_emb.weight, std=0.1)
        nn.init.zeros_(bias.weight)
        modules = (user_emb, item_emb, bias)
        optimiser = torch.optim.Adam([m.weight for m in modules], lr=float(params["lr"]))
        l2 = float(params["l2"])
        batch = int(params["batch_size"])
        u_all = torch.from_numpy(pos_u).to(device)
        i_all = torch.from_numpy(pos_i).to(device)

        val_users = self._validation_users(data, rng)
        best_ndcg, best_epoch, best_state = -1.0, -1, None
        start = time.perf_counter()
        for epoch in range(int(params["epochs"])):
            order = torch.randperm(len(pos_u), generator=gen).to(device)
            neg_all = torch.from_numpy(sample_negatives(pos_u, positive_codes, n_items, rng)).to(device)
            total, seen = 0.0, 0
            n_batches = (len(pos_u) + batch - 1) // batch
            for b in progress(range(n_batches), desc=f"bpr epoch {epoch}", total=n_batches):
                sel = order[b * batch : (b + 1) * batch]
                u, i, j = u_all[sel], i_all[sel], neg_all[sel]
                pu, qi, qj = user_emb(u), item_emb(i), item_emb(j)
                bi, bj = bias(i).squeeze(1), bias(j).squeeze(1)
                diff = (pu * (qi - qj)).sum(1) + bi - bj
                reg = pu.pow(2).sum(1) + qi.pow(2).sum(1) + qj.pow(2).sum(1) + bi.pow(2) + bj.pow(2)
                loss = -nn.functional.logsigmoid(diff).mean() + l2 * reg.mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(sel)
                seen += len(sel)
            metrics = {"loss": total / max(seen, 1)}
            self._sync(modules)
            if val_users is not None:
                from evaluation.evaluate import evaluate

                metrics["val_ndcg@10"] = evaluate(self, data, split="valid", ks=(10,), users=val_users)["ndcg@10"]
                if metrics["val_ndcg@10"] > best_ndcg:
                    best_ndcg, best_epoch = metrics["val_ndcg@10"], epoch
                    best_state = self._state()
            self.history.append({"epoch": float(epoch), **metrics})
            if callback is not None:
                callback(epoch, metrics)
            if val_users is not None and epoch - best_epoch >= int(params["patience"]):
                break
        if best_state is not None:
            self._restore(best_state)
        self.best_epoch = best_epoch
        self.train_seconds = time.perf_counter() - start

    def _validation_users(self, data: TrainData, rng: np.random.Generator) -> np.ndarray | None:
        """Users for early stopping (a seeded sample of ``val_users``), or None when it is off."""
        if int(self.params["patience"]) <= 0 or not data.valid:
            return None
        users = np.array(sorted(data.valid), dtype=np.int64)
        limit = int(self.params["val_users"])
        if 0 < limit < len(users):
            users = np.sort(rng.choice(users, size=limit, replace=False))
        return users

    def _sync(self, modules: tuple[nn.Embedding, nn.Embedding, nn.Embedding]) -> None:
        user_emb, item_emb, bias = modules
        self._users = user_emb.weight.detach().cpu().numpy().astype(np.float32)
        self._items = item_emb.weight.detach().cpu().numpy().astype(np.float32)
        self._bias = bias.weight.detach().cpu().numpy().ravel().astype(np.float32)

    # ---- scoring ----------------------------------------------------------------------------
    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros((len(users), self._items.shape[1]), dtype=np.float32)
        known = users != UNKNOWN_USER
        out[known] = self._users[users[known]]
        for row in np.flatnonzero(~known):
            hist = np.asarray(histories[int(row)], dtype=np.int64)
            if len(hist):
                out[row] = self._items[hist].mean(axis=0)
        return out

    def item_matrix(self) -> np.ndarray:
        return self._items

    def item_bias(self) -> np.ndarray | None:
        return self._bias

    # ---- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"users": self._users.copy(), "items": self._items.copy(), "bias": self._bias.copy()}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._users = state["users"].astype(np.float32)
        self._items = state["items"].astype(np.float32)
        self._bias = state["bias"].astype(np.float32)
