"""One-round overlap, as Streaming DiLoCo (arXiv 2501.18512) and Decoupled DiLoCo overlap
communication with computation: after publishing its delta for round r, a learner keeps taking
inner steps from its local weights instead of idling while the hub closes the round. When the
global model of round r+1 arrives, the progress made meanwhile is carried over onto it,

    w ← global_{r+1} + (w_now − w_at_publish),

and those steps count toward round r+1's H. The learner may run at most `max_ahead` steps
(default H) ahead of the last global model; then it stalls, so a region can never train on a
base more than one round old.

    overlap = Overlap(inner_steps=H)
    model = await learner.global_model()
    w = dict(model.items())
    while True:
        w = train(w, overlap.remaining)                     # H − carried steps
        await learner.publish_delta(w, tokens=..., inner_steps=H)
        overlap.published(w)
        while not await learner.poll_next_round():
            if learner.last_round: break                   # nothing more to overlap with
            if overlap.may_step(): w = train(w, k); overlap.stepped(k)
            else: await asyncio.sleep(...)                  # H ahead: stall
        else:
            w = overlap.carry_over(await learner.global_model(), w)
            continue
        break

Works on any mapping of name → numpy array (the learner's own weights), in float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import SovereignConfigError


class Overlap:
    """The bookkeeping of one-round overlap: how many steps the learner took since it published,
    whether it may take more, and the carry-over onto the next global model."""

    def __init__(self, inner_steps: int, max_ahead: int | None = None) -> None:
        if inner_steps < 1:
            raise SovereignConfigError("ConfigInvalid", f"inner_steps must be at least 1, not {inner_steps}")
        ahead = inner_steps if max_ahead is None else max_ahead
        if not 0 <= ahead <= inner_steps:
            # More than H ahead would carry more than a whole round's steps into the next delta.
            raise SovereignConfigError("ConfigInvalid", f"max_ahead must be within 0…{inner_steps}, not {ahead}")
        self.inner_steps = inner_steps
        self.max_ahead = ahead
        self.carried = 0
        """Steps of the current round taken before its global model arrived (carried over)."""
        self.ahead = 0
        """Steps taken since the last publish."""
        self._at_publish: dict[str, np.ndarray] | None = None

    @property
    def remaining(self) -> int:
        """Steps still to take for the current round's H."""
        return self.inner_steps - self.carried

    def published(self, weights: Mapping[str, np.ndarray]) -> None:
        """The learner published a delta of these weights; steps from here on are ahead."""
        self._at_publish = {k: np.array(v, dtype=np.float32, copy=True) for k, v in weights.items()}
        self.ahead = 0

    def may_step(self, n: int = 1) -> bool:
        """Whether `n` more steps stay within `max_ahead` of the last global model."""
        return self._at_publish is not None and self.ahead + n <= self.max_ahead

    def allowed(self, n: int) -> int:
        """How many of `n` wanted steps may be taken now (0: stall)."""
        return 0 if self._at_publish is None else max(0, min(n, self.max_ahead - self.ahead))

    def stepped(self, n: int) -> None:
        if n < 0 or self.ahead + n > self.max_ahead:
            raise SovereignConfigError(
                "OverlapExceeded", f"{self.ahead} + {n} steps ahead exceed max_ahead {self.max_ahead}"
            )
        self.ahead += n

    def carry_over(self, global_weights: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]) -> dict:
        """The weights to continue from in the new round: ``global + (weights − weights at
        publish)``; the steps taken since the publish count toward the new round."""
        if self._at_publish is None:
            raise SovereignConfigError("OverlapNotPublished", "carry_over before published(): nothing to carry")
        if set(global_weights) != set(self._at_publish) or set(weights) != set(self._at_publish):
            raise SovereignConfigError(
                "OverlapShapeMismatch", "the global model, the weights and the published weights name different tensors"
            )
        out = {}
        for k, g in global_weights.items():
            base = self._at_publish[k]
            now = np.asarray(weights[k], dtype=np.float32)
            if g.shape != base.shape or now.shape != base.shape:
                raise SovereignConfigError(
                    "OverlapShapeMismatch", f"{k}: global {g.shape}, weights {now.shape}, published {base.shape}"
                )
            out[k] = (np.asarray(g, dtype=np.float32) + (now - base)).astype(np.float32)
        self.carried = self.ahead
        self.ahead = 0
        self._at_publish = None
        return out
