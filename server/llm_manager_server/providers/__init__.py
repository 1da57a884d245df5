"""Model backends. Each implements the small :class:`~.base.Provider` contract."""
