"""The command-line programs, installed as console scripts (``jaxnorm-train``,
``jaxnorm-prune``, ``jaxnorm-continual``, ``jaxnorm-theory``); ``scripts/<name>.py`` are thin
wrappers over them for a checkout."""
