"""Compile backends for tests: one that fails as Inductor/ptxas failures do (inside Dynamo's
backend call, which Dynamo reports as BackendCompilerFailed)."""


def raising_backend(gm, example_inputs):
    raise RuntimeError("ptxas fatal: simulated compiler failure")
