"""The runtime: the learning core's units hosted in processes that talk over a ZeroMQ bus.

The wire format, the bus, the process loop, the encoder worker (a cortex unit),
the hub (the CDZ unit), the lossless sequencer, and the supervisor that starts
the processes a topology names. It imports `agent.core`, never the other way."""
