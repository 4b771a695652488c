"""The learning core: the rules (cortex, CDZ), the units and the brain that wires them, and a run's state.

Nothing here knows of processes, sockets or sensors; `agent.runtime` hosts these
same units behind a message bus."""
