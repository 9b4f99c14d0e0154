"""Errors a user can act on. The CLI prints these as one line, never a traceback."""


class CoralError(Exception):
    """Base for errors caused by input (config, files, messages), not by bugs in CORAL."""


class ConfigError(CoralError):
    pass


class BenchmarkError(CoralError):
    pass


class MessageError(CoralError):
    pass


class AdapterError(CoralError):
    pass
