"""Which weights a rollout engine holds, and whether a weight update is under way on it: the rollout actor keeps one
`WeightState` (actors/rollout.py) and asks it before anything generates.

A weight update is `begin` (the actor's `pause`), the load (one call, or several on the GPU routes), then `finish`.
Between a GPU route's calls other driver threads call the actor while the engine's layers wait for their weights, so
until the update ends nothing generates: `generate` raises `WeightsUpdatingError` (its caller asks again,
rlhf/rollout/generation.py) and streamed requests wait. A route that gives up half-way `abandon`s: the engine holds
parts of two versions and refuses to generate (`StaleWeightsError`, as a restarted one does) until a whole push lands.
"""


class StaleWeightsError(RuntimeError):
    """The engine holds other weights than the driver expects (it was restarted after a crash, or a push to it
    stopped half-way)."""


class WeightsUpdatingError(RuntimeError):
    """A weight update is half-way on the engine (a GPU route's push spans several calls): ask again after it."""


class WeightState:
    def __init__(self):
        self.version = 0  # weight pushes received; 0 = the initial weights
        self.updating = False  # between `begin` and the end of a weight update: nothing generates
        self.damaged = False  # a weight update stopped half-way: nothing generates until a whole one lands

    @property
    def blocked(self) -> bool:
        """Nothing may generate (an update is under way, or one stopped half-way)."""
        return self.updating or self.damaged

    def check(self, version: int | None) -> None:
        """Raise unless the engine may generate for a caller that accepts weights `version` or newer (None: any)."""
        if self.updating:  # its weights are half-loaded: the caller asks again (rlhf/rollout/generation.py)
            raise WeightsUpdatingError("a weight update is under way on this engine")
        if self.damaged:
            raise StaleWeightsError(f"the weight update after version {self.version} stopped half-way on this engine")
        if version is not None and self.version < version:
            raise StaleWeightsError(f"engine holds weights version {self.version}, the driver expects {version}")

    def begin(self) -> None:
        self.updating = True

    def finish(self, version: int) -> None:
        self.version, self.updating, self.damaged = version, False, False

    def abandon(self) -> None:
        if self.updating:
            self.updating, self.damaged = False, True
