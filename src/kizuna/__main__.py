"""``python -m kizuna``: the ``kizuna`` command, for when the environment's bin folder is not on PATH."""
if __name__ == "__main__":
    from kizuna.apps.cli import console_main

    raise SystemExit(console_main())
