"""Errors raised by the runtime (imported by the public package as cg.CompileError)."""


class CompileError(RuntimeError):
    """A generated kernel failed to compile; carries the source and the compiler log."""

    def __init__(self, message: str, source: str, log: str):
        self.source = source
        self.log = log
        numbered = "\n".join(f"{i + 1:4d}  {line}" for i, line in enumerate(source.splitlines()))
        super().__init__(f"{message}\n--- compiler log ---\n{log}\n--- source ---\n{numbered}")


class DeviceError(RuntimeError):
    """A device is unusable: no GPU, no driver, out of memory."""
