"""The loop's core: the runner, the pure policy, the re-focus strategies and frame checks."""
