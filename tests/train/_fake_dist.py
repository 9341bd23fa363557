"""The part of torch.distributed every in-process stand-in needs: this process is rank ``rank`` of ``world`` in an
initialised group (tests that simulate other ranks subclass it with the collectives they need)."""


class FakeRankGroup:
    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_rank(self):
        return self.rank

    def get_world_size(self):
        return self.world
