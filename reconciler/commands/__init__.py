"""One module per `portside` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
